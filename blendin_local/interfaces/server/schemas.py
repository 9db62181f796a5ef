"""The requests' JSON bodies and their checks, and their translation into what the engine takes
(GenerationSettings, a prompt or a list of Messages).

Everything a request supplies is hostile until checked: every string in it, keys and ignored
fields included, must be text that UTF-8 can encode (a lone surrogate such as "\\ud800" is a 400
naming the field); stop strings are bounded in number (MAX_STOPS) and length (MAX_STOP_CHARS).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from blendin_local.engine.logprobs import MAX_TOP_LOGPROBS
from blendin_local.engine.messages import ROLE_ALIASES, ROLES, MessageError, read_conversation
from blendin_local.engine.prompts import Message, PromptFormatError
from blendin_local.engine.settings import ALPHA_AUTO, REPORT_FIELDS, GenerationSettings, value_type
from blendin_local.interfaces.server.errors import ApiError, as_text, shown

# Every GenerationSettings field is a request field of the same name (OpenAI's temperature, top_p,
# max_tokens, stop, seed, presence_penalty and frequency_penalty among them; llama-server's top_k,
# min_p, repeat_penalty and repeat_last_n, and BlendIn's own, as extra body fields), except these: a
# request's system prompt is its first message, and log-probabilities are asked for in OpenAI's
# own fields (chat: logprobs and top_logprobs; completions: logprobs). The penalties count the
# prompt's tokens too, as llama-server's do (OpenAI describes its own as counting the tokens
# sampled so far).
NOT_REQUEST_FIELDS = ("system", *REPORT_FIELDS)
# OpenAI allows 4 stop strings. The text stream compares every stop string's prefixes with the
# end of the text at each token: their number and length bound the time each token takes.
MAX_STOPS = 16
MAX_STOP_CHARS = 256
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(data: Any) -> tuple[str, int] | None:
    """The first string in a JSON value (dict keys included) that holds a lone surrogate, as (its
    path, like messages[0].content, and the character's index); None if there is none.

    Iterative: JSON nests as deep as the parser allowed, and a path is built only when one is found.
    """
    stack: list[tuple[Any, tuple | None]] = [(data, None)]  # (value, its path as (parent path, key))
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            found = _LONE_SURROGATE.search(value)
            if found:
                return _path(where), found.start()
        elif isinstance(value, dict):
            for key in value:
                found = _LONE_SURROGATE.search(key) if isinstance(key, str) else None
                if found:
                    return _path((where, key)), found.start()
            stack.extend(reversed([(item, (where, key)) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, (where, i)) for i, item in enumerate(value)]))
    return None


def _path(where: tuple | None) -> str:
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
    return path or "body"


class RequestBody(BaseModel):
    """A request's JSON body. Fields this server has no use for (OpenAI clients send user, store,
    ...) are allowed and ignored; but every string anywhere in the body must be text: a lone
    surrogate (JSON allows "\\ud800") fails wherever the text is encoded, so it is refused here, once
    for every field, rather than field by field."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _all_strings_are_text(cls, data: Any) -> Any:
        found = lone_surrogate(data) if isinstance(data, dict) else None
        if found is not None:
            where, index = found
            # The path may hold the surrogate (a key): pydantic itself must be able to encode it.
            raise PydanticCustomError(
                "lone_surrogate",
                "a lone surrogate at character {index} is not text (UTF-8 cannot encode it)",
                {"param": as_text(where), "index": index},
            )
        return data


def _whole_float_as_int(value: Any) -> Any:
    # pydantic takes 5.0 for an int but not 1e30 (beyond 64 bits); a count that large is clamped later.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole_float_as_int)]


def _flag_as_count(value: Any) -> Any:
    # A completion's logprobs is a count, but clients written for chat send true or false: false
    # asks for nothing, true for the chosen tokens' alone (pydantic would read them as 0 and 1).
    if isinstance(value, bool):
        return 0 if value else None
    return _whole_float_as_int(value)


LogprobsCount = Annotated[int | None, BeforeValidator(_flag_as_count)]


class OpenAIRequest(RequestBody):
    """OpenAI's fields that are not generation settings."""

    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_completion_tokens: WholeNumber | None = Field(
        None, description="OpenAI's newer name for max_tokens.", json_schema_extra={"minimum": 1}
    )
    n: WholeNumber | None = Field(None, json_schema_extra={"minimum": 1, "maximum": 1})  # one choice per request
    trace: bool = Field(
        False,
        description="With stream: each chunk's blendin object carries the provenance of its text (pieces:"
        " source, base_top_p, alpha, guide_top), as the web page shows it.",
    )

    def top_logprobs_asked(self) -> tuple[int | None, str]:
        """(the alternatives per token the request asks log-probabilities for, None: none; the
        field that asked)."""
        return None, "logprobs"


# Request types that are wider than the settings' own: OpenAI's stop may be one string, and alpha
# may be written "auto" (GenerationSettings reads it).
WIDER_REQUEST_TYPES: dict[str, Any] = {"stop": str | list[str], "alpha": float | Literal[ALPHA_AUTO]}


def request_type(name: str) -> Any:
    """What a request may send for a settings field: its value type without the settings' checks
    (those answer with a 400 naming the field), or null for the server's default. A whole float
    counts as an int, and a method is any string (an unknown one is named in the 400)."""
    kind = WIDER_REQUEST_TYPES.get(name, value_type(name))
    if kind is int:
        kind = WholeNumber
    elif get_origin(kind) is Literal:
        kind = str
    return kind | None


# JSON Schema's names for the bounds of annotated_types (pydantic's ge, le, gt, lt).
_BOUND_KEYWORDS = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum"))


def documented_limits(name: str) -> dict[str, Any]:
    """What the request schema says of a settings field beyond its type: the settings' bounds
    (numeric keywords, which JSON Schema applies to numbers only, so "auto" and null stay valid)
    and a Literal's values. The server checks them itself, with a 400 naming the field."""
    limits: dict[str, Any] = {}
    for constraint in GenerationSettings.model_fields[name].metadata:
        for attribute, keyword in _BOUND_KEYWORDS:
            if getattr(constraint, attribute, None) is not None:
                limits[keyword] = getattr(constraint, attribute)
    kind = value_type(name)
    if get_origin(kind) is Literal:
        limits["enum"] = [*get_args(kind), None]
    if name == "stop":  # request_stops' limits: maxItems for a list, maxLength for one string
        limits.update(maxItems=MAX_STOPS, maxLength=MAX_STOP_CHARS)
    return limits


SETTINGS_FIELDS = tuple(name for name in GenerationSettings.model_fields if name not in NOT_REQUEST_FIELDS)
# The fields that chat and completion requests share: OpenAI's, and one per generation setting.
SamplingRequest: type[OpenAIRequest] = create_model(  # type: ignore[call-overload]  # fields built from the settings
    "SamplingRequest",
    __base__=OpenAIRequest,
    __doc__="A request's sampling and blending fields; null or absent:"
    " the server's default (the `blendin serve` options).",
    **{
        name: (
            request_type(name),
            Field(
                None,
                description=GenerationSettings.model_fields[name].description,
                json_schema_extra=documented_limits(name) or None,
            ),
        )
        for name in SETTINGS_FIELDS
    },
)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(json_schema_extra={"enum": [*ROLES, *ROLE_ALIASES]})
    content: str | list[dict[str, Any]] | None = None


# The schema states the minimums the server checks itself (its 400 says what is wrong, in words a
# pydantic message would not find): a conversation of one message or more, and one prompt that
# is not empty. In JSON Schema minLength constrains only strings and minItems only arrays.
class ChatRequest(SamplingRequest):
    messages: list[ChatMessageIn] = Field(json_schema_extra={"minItems": 1})
    logprobs: bool | None = Field(None, description="Return each answer token's log-probability.")
    top_logprobs: WholeNumber | None = Field(
        None,
        description="With logprobs: also this many of the most likely tokens at each position.",
        json_schema_extra={"minimum": 0, "maximum": MAX_TOP_LOGPROBS},
    )

    def top_logprobs_asked(self) -> tuple[int | None, str]:
        if not self.logprobs:
            if self.top_logprobs is not None:
                raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            return None, "logprobs"
        return (self.top_logprobs or 0), "top_logprobs"


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(json_schema_extra={"minLength": 1, "minItems": 1, "maxItems": 1})
    logprobs: LogprobsCount = Field(
        None,
        description="Return each answer token's log-probability and this many of the most likely tokens"
        " (true: the token's own only).",
        json_schema_extra={
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_TOP_LOGPROBS},
                {"type": "boolean"},
                {"type": "null"},
            ]
        },
    )
    # OpenAI's fields this server does not support: only the values that ask for nothing pass
    echo: bool | None = Field(None, json_schema_extra={"enum": [False, None]})
    suffix: str | None = Field(None, json_schema_extra={"maxLength": 0})
    best_of: int | None = Field(None, json_schema_extra={"minimum": 1, "maximum": 1})

    def top_logprobs_asked(self) -> tuple[int | None, str]:
        return self.logprobs, "logprobs"


def request_stops(stop: str | list[str]) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop has {len(stops)} strings; at most {MAX_STOPS} are allowed", param="stop")
    for i, s in enumerate(stops):
        if len(s) > MAX_STOP_CHARS:
            raise ApiError(
                400, f"stop[{i}] is {len(s)} characters long; at most {MAX_STOP_CHARS} are allowed", param="stop"
            )
    return stops


def request_settings(body: SamplingRequest, defaults: GenerationSettings) -> GenerationSettings:
    """The server's defaults with what the request sets; a value the settings refuse is a 400
    naming the request's field."""
    if body.n not in (None, 1):
        raise ApiError(400, f"n={shown(body.n)} is not supported: this server writes one choice per request", param="n")
    values = defaults.model_dump()
    names = {name: name for name in values}
    for name in SETTINGS_FIELDS:
        value = getattr(body, name)
        if value is not None:
            values[name] = value
    if body.max_completion_tokens is not None:
        values["max_tokens"], names["max_tokens"] = body.max_completion_tokens, "max_completion_tokens"
    values["top_logprobs"], names["top_logprobs"] = body.top_logprobs_asked()  # never a server default
    stop = body.stop  # type: ignore[attr-defined]  # a field generated from the settings (SamplingRequest)
    if stop is not None:
        values["stop"] = request_stops(stop)
    try:
        return GenerationSettings(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = names.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "settings"
        raise ApiError(400, f"invalid {where}: {first['msg']} (got {shown(first.get('input'))})", param=where) from None
    except PromptFormatError as e:  # the server's own defaults were checked as it started: this is the request's
        raise ApiError(400, str(e), param=e.field) from None


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[Message]:
    """A chat request's messages as the engine takes them (engine/messages.py); one that does not
    fit is a 400 naming its field."""
    try:
        return read_conversation([{"role": m.role, "content": m.content} for m in messages])
    except MessageError as e:
        raise ApiError(400, str(e), param=e.field) from None
