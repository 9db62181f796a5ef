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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blendin_local.engine.prompts import check_style
from blendin_local.engine.sampling import SamplerSettings
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
PROMPT_STYLES_HELP = "plain | chat | raw | a format with {prompt} and {system} ({{ and }} write braces)."


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
    top_k: int = Field(0, ge=0, description="Sample among this many most likely tokens; 0 = off.")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Sample among the most likely tokens that hold this much probability."
    )
    min_p: float = Field(
        0.0, ge=0.0, le=1.0, description="Leave out tokens less likely than this times the most likely one."
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
        return SamplerSettings(self.temperature, self.top_k, self.top_p, self.min_p)

    def stop_strings(self) -> list[str]:
        return list(self.stop) + (list(TURN_STOPS) if self.stop_at_new_turn else [])


def value_type(name: str) -> Any:
    """The type a GenerationSettings field holds, without its `| None` (for the interfaces that
    build their fields from the settings' fields)."""
    annotation = GenerationSettings.model_fields[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation
