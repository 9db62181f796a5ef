"""GenerationSettings: the one declaration of everything one request may set.

Each field carries its range, its default and a `description`; the command line's options (their
help texts, click ranges and defaults) and the server's request fields are generated from these
fields, so a new tunable is one field here plus its use in the engine. Field metadata read by the
command line, in `json_schema_extra`:
    cli:           the option's names when they are not --field-name, e.g. ("-n", "--max-tokens")
    default_means: what a default of None does, shown as the option's default ("auto")
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from blendin_local.engine.logprobs import MAX_TOP_LOGPROBS
from blendin_local.engine.prompts import FEWSHOT_STOPS, check_style
from blendin_local.engine.sampling import (
    LLAMA_CPP_MIN_P,
    LLAMA_CPP_REPEAT_LAST_N,
    LLAMA_CPP_TOP_K,
    LLAMA_CPP_TOP_P,
    WHOLE_CONTEXT,
    SamplerSettings,
)
from blendin_local.engine.triggers import EndingTrigger, LoopTrigger
from blendin_local.errors import BlendinError

# A pre-trained base answers, then invents the next question: these end the answer there.
TURN_STOPS = ("\nQuestion:", "\nQ:", "\nUser:", "\nHuman:")
_TURN_STOPS_SHOWN = ", ".join(stop.replace("\n", "\\n") for stop in TURN_STOPS)  # as a help text writes them
# A gamma above every probability: the guide is consulted at every token (ensemble's, and the
# largest gamma a request may set).
GAMMA_EVERY_TOKEN = 1.01
ALPHA_AUTO = "auto"  # alpha's spelling of None: the weight comes from the two distributions
# Methods that read the guide's untuned counterpart (the "anti" model) besides the guide.
METHODS_WITH_ANTI = ("proxy",)
# Fields that ask what a response reports, not how its text is made: one request's choice, never a
# default of a chat or a server (OpenAI's requests ask for log-probabilities each time).
REPORT_FIELDS = ("top_logprobs",)
# Methods whose steps each choose one base token, which a draft can be checked against
# (speculation.py); the guide alone and Nudging's inserted words are not base tokens.
METHODS_WITH_SPECULATION = ("base", "blendin", "ensemble", "proxy")
MAX_DRAFT = 64  # --speculative's largest K: a base batch of 65 rows is 65 MB at a 262k vocabulary
PROMPT_STYLES_HELP = (
    "plain | chat | raw | fewshot (worked examples, each answer closed by an end marker)"
    " | a format with {prompt} and {system} ({{ and }} write braces)."
)


class MissingAnti(BlendinError):
    """A method that needs the guide's untuned counterpart, asked of a pair without one. `asked_as`
    and `remedy` let each interface say it in its own terms (an option, a chat command, ...)."""

    def __init__(self, asked_as: str, remedy: str):
        super().__init__(f"{asked_as} needs the guide's untuned counterpart: {remedy}")


def check_anti(method: str, has_anti: bool, asked_as: str | None = None, remedy: str = "pass --anti PATH|NAME") -> None:
    """The one check that a method which needs an anti model has one; MissingAnti if not."""
    if method in METHODS_WITH_ANTI and not has_anti:
        raise MissingAnti(asked_as or f"--method {method}", remedy)


class GenerationSettings(BaseModel):
    """Everything one request may set. Ranges are checked here, once, for the CLI, API and server."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["base", "guide", "nudging", "blendin", "ensemble", "proxy"] = Field(
        "blendin", description="How the guide steers the base (proxy also needs the guide's untuned counterpart)."
    )
    max_tokens: int = Field(
        256, ge=1, description="Most tokens in the answer.", json_schema_extra={"cli": ["-n", "--max-tokens"]}
    )
    temperature: float = Field(
        0.0, ge=0.0, le=100.0, description="Sampling temperature; 0 = greedy.", json_schema_extra={"cli": ["--temp"]}
    )
    # top-k, top-p and min-p left unset (None) take llama.cpp's defaults when sampling; sampler()
    # resolves them. Greedy decoding reads none of them.
    top_k: int | None = Field(
        None,
        ge=0,
        description="Sample among this many most likely tokens; 0 = off.",
        json_schema_extra={"default_means": f"{LLAMA_CPP_TOP_K} when sampling"},
    )
    top_p: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Sample among the most likely tokens that hold this much probability; 1 = off.",
        json_schema_extra={"default_means": f"{LLAMA_CPP_TOP_P} when sampling"},
    )
    min_p: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Leave out tokens less likely than this times the most likely one; 0 = off.",
        json_schema_extra={"default_means": f"{LLAMA_CPP_MIN_P} when sampling"},
    )
    repeat_penalty: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="Make tokens in the penalty window less likely: their log-probability is multiplied by"
        " this (llama.cpp's repeat penalty); 1 = off.",
    )
    repeat_last_n: int = Field(
        LLAMA_CPP_REPEAT_LAST_N,
        ge=WHOLE_CONTEXT,
        description="The penalty window: the last this many tokens, the prompt's included; 0 = off,"
        " -1 = the whole context.",
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtract this from the log-probability of each token in the penalty window; 0 = off.",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtract this times its count in the penalty window from each token's log-probability; 0 = off.",
    )
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed for sampling.", json_schema_extra={"default_means": "random, reported"}
    )
    gamma: float = Field(
        0.4,
        ge=0.0,
        le=GAMMA_EVERY_TOKEN,
        description="Intervene when the base's top-1 probability is below this"
        f" ({GAMMA_EVERY_TOKEN} = at every token).",
    )
    alpha: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=f"Guide weight in an intervention ({ALPHA_AUTO}: from the two distributions).",
        json_schema_extra={"default_means": ALPHA_AUTO},
    )
    nudging_chunk: int = Field(16, ge=1, le=256, description="Tokens the guide drafts per Nudging round.")
    loop_trigger: bool = Field(
        False,
        description="BlendIn also consults the guide where the confident base would repeat an n-gram of its"
        " recent answer, and ends a loop that goes on anyway (stop reason loop).",
        json_schema_extra={"cli": ["--loop-trigger/--no-loop-trigger"]},
    )
    loop_ngram: int = Field(4, ge=2, le=64, description="Tokens in the n-gram the loop trigger looks for.")
    loop_window: int = Field(
        256, ge=8, le=8192, description="The answer's last tokens the loop trigger searches for a repeat."
    )
    end_trigger: bool = Field(
        False,
        description="BlendIn asks the guide at each line or sentence end whether the answer is finished.",
        json_schema_extra={"cli": ["--end-trigger/--no-end-trigger"]},
    )
    end_threshold: float = Field(
        0.5,
        gt=0.0,
        description="The guide's end-of-turn probability at a line or sentence end that ends the answer;"
        " above 1 it never ends one, the probabilities are only measured (end_checks in --json and eval"
        " records), to choose a threshold afterwards.",
    )
    speculative: int = Field(
        0,
        ge=0,
        le=MAX_DRAFT,
        description="The guide drafts this many of its tokens and the base checks them in one batch: the"
        " same text (up to rounding at near-ties), sooner, most where the base is the slow model;"
        " 2 is the value to try (docs/performance.md); 0 = off.",
    )
    top_logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Report each answer token's log-probability in the distribution it was chosen from, and"
        " this many of that distribution's most likely tokens (0: the token's own only); in --json's trace.",
        json_schema_extra={"default_means": "none"},
    )
    stop: list[str] = Field(default_factory=list, description="Stop string (repeatable).")
    stop_at_new_turn: bool = Field(
        True,
        description=f"Stop where the base starts a new turn ({_TURN_STOPS_SHOWN}).",
        json_schema_extra={"cli": ["--stop-new-turn/--no-stop-new-turn"]},
    )
    system: str | None = Field(None, description="System prompt.", json_schema_extra={"cli": ["-s", "--system"]})
    base_prompt: str = Field("plain", description=f"The base's prompt: {PROMPT_STYLES_HELP}")
    guide_prompt: str = Field("chat", description=f"The guide's prompt: {PROMPT_STYLES_HELP}")

    @field_validator("alpha", mode="before")
    @classmethod
    def _auto_alpha(cls, value: Any) -> Any:
        return None if value == ALPHA_AUTO else value

    @model_validator(mode="after")
    def _prompt_styles(self) -> GenerationSettings:
        # After the fields, as a PromptFormatError (a BlendinError naming the field, not a pydantic
        # error): a bad number elsewhere in the same request is reported first.
        check_style(self.base_prompt, "base_prompt")
        check_style(self.guide_prompt, "guide_prompt")
        return self

    @field_validator("speculative")
    @classmethod
    def _speculative_method(cls, value: int, info: ValidationInfo) -> int:
        # A field error, so that the CLI, the chat and the server name the field like any other.
        method = info.data.get("method")
        if value and method is not None and method not in METHODS_WITH_SPECULATION:
            raise PydanticCustomError(
                "speculative_method",
                "works with the methods {methods}, not {method}: set it to 0",
                {"methods": ", ".join(METHODS_WITH_SPECULATION), "method": method},
            )
        return value

    @classmethod
    def checked(cls, **values: Any) -> GenerationSettings:
        """Settings from user input; a bad value becomes one readable BlendinError."""
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            got = repr(first.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."  # the input may be megabytes
            raise BlendinError(f"invalid {where}: {first['msg']} (got {got})") from None

    def sampler(self) -> SamplerSettings:
        """The sampler's settings: a filter left unset is llama.cpp's default when sampling, and off
        when greedy (which reads no filter)."""
        unset = (
            SamplerSettings(top_k=LLAMA_CPP_TOP_K, top_p=LLAMA_CPP_TOP_P, min_p=LLAMA_CPP_MIN_P)
            if self.temperature > 0.0
            else SamplerSettings()
        )
        return SamplerSettings(
            temperature=self.temperature,
            top_k=unset.top_k if self.top_k is None else self.top_k,
            top_p=unset.top_p if self.top_p is None else self.top_p,
            min_p=unset.min_p if self.min_p is None else self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    def loop(self) -> LoopTrigger | None:
        return LoopTrigger(self.loop_ngram, self.loop_window) if self.loop_trigger else None

    def ending(self) -> EndingTrigger | None:
        return EndingTrigger(self.end_threshold) if self.end_trigger else None

    def stop_strings(self) -> list[str]:
        """The user's stop strings, the new-turn ones, and the few-shot prompt's end marker (its
        examples teach the model to write it where its answer ends)."""
        fewshot = "fewshot" in (self.base_prompt, self.guide_prompt)
        return (
            list(self.stop)
            + (list(TURN_STOPS) if self.stop_at_new_turn else [])
            + (list(FEWSHOT_STOPS) if fewshot else [])
        )


def value_type(name: str) -> Any:
    """The type a GenerationSettings field holds, without its `| None` (for the interfaces that
    build their fields from the settings' fields)."""
    annotation = GenerationSettings.model_fields[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation
