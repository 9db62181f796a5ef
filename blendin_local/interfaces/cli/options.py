"""What the commands share: their option types, the model options, the pair loader, and the
generation options, generated from GenerationSettings' fields (engine/settings.py).

A field's description is its option's help, its range a click range, its default the option's
default (a command may override one where its default really differs: eval's answers are longer).
A new field is a new option on every command that takes generation settings, with no edit here.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
import click
from click.core import ParameterSource
from pydantic.fields import FieldInfo

from blendin_local import pair
from blendin_local.backends import registry
from blendin_local.backends.cpu_kernels import REPACK_ENV, REPACK_SETTINGS
from blendin_local.backends.llama import LoadOptions, default_threads
from blendin_local.backends.registry import PairEntry
from blendin_local.engine.prompts import PromptFormatError, check_style, utf8_problem
from blendin_local.engine.settings import ALPHA_AUTO, GenerationSettings, check_anti, value_type
from blendin_local.pair import BlendPair

SOURCE_COLOURS = {"base": None, "blend": "yellow", "guide": "green"}
INT32_MAX = 2**31 - 1  # llama.cpp counts tokens, positions and layers in int32
CTX_SIZE = click.IntRange(registry.CTX_SIZE_MIN, registry.CTX_SIZE_MAX)
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS


class FiniteFloat(click.FloatRange):
    """A float option that must be a number: click's float type reads "nan" and "inf" as floats,
    and nan passes every range check of click.FloatRange (it fails no comparison)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


class AlphaType(click.ParamType):
    """--alpha: "auto" (None: the weight comes from the two distributions) or a finite number; its
    range is checked by GenerationSettings."""

    name = f"{ALPHA_AUTO}|FLOAT"

    def convert(self, value, param, ctx):
        if value is None or value == ALPHA_AUTO:
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither '{ALPHA_AUTO}' nor a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is neither '{ALPHA_AUTO}' nor a finite number", param, ctx)
        return number


class Utf8Text(click.ParamType):
    """Text from the command line. An argument that is not UTF-8 reaches Python as lone surrogates
    (surrogateescape), which fail as a traceback wherever the text is encoded; here it is one error
    naming the option. read_text_as_utf8 gives this type to every text parameter of every command."""

    name = "text"

    def convert(self, value, param, ctx):
        value = click.STRING.convert(value, param, ctx)
        problem = utf8_problem(value)
        if problem is None:
            return value
        try:  # an ASCII locale (LC_ALL=C) escapes every non-ASCII byte, UTF-8 or not: read them as UTF-8
            return os.fsencode(value).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            self.fail(f"not valid UTF-8 ({problem})", param, ctx)


UTF8_TEXT = Utf8Text()


class PromptStyleType(Utf8Text):
    """--base-prompt/--guide-prompt: a builtin style or a format, checked as the option is read
    (a usage error naming the option, before GenerationSettings would refuse it)."""

    name = "plain|chat|raw|FORMAT"

    def convert(self, value, param, ctx):
        try:
            return check_style(super().convert(value, param, ctx))
        except PromptFormatError as e:
            self.fail(e.problem, param, ctx)


def read_text_as_utf8(command: click.Command) -> None:
    """Every plain text parameter of `command` and its subcommands becomes Utf8Text: one check for
    all of them, including options added later, since main() calls this on the finished tree."""
    for param in command.params:
        if param.type is click.STRING:
            param.type = UTF8_TEXT
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            read_text_as_utf8(subcommand)


# -- generation settings -----------------------------------------------------------------------

# Fields whose command-line text is more than their annotation says: alpha's "auto", and the
# prompt styles, parsed as the option is read.
OPTION_TYPES: dict[str, click.ParamType] = {
    "alpha": AlphaType(),
    "base_prompt": PromptStyleType(),
    "guide_prompt": PromptStyleType(),
}


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """The field's range as click range arguments."""
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Gt):
            bounds.update(min=rule.gt, min_open=True)
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
        elif isinstance(rule, annotated_types.Lt):
            bounds.update(max=rule.lt, max_open=True)
    return bounds


def settings_option(name: str, field: FieldInfo, default: Any) -> Callable:
    """The click option of one GenerationSettings field; its value arrives under the field's name."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = name.replace("_", "-")
    kind = value_type(name)
    given = extra.get("cli")
    names = (
        [str(n) for n in given]
        if isinstance(given, list)
        else [f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}"]
    )
    default_means = extra.get("default_means")
    settings: dict[str, Any] = dict(
        default=default,
        help=field.description,
        show_default=default_means if default is None and default_means else default is not None,
    )
    if name in OPTION_TYPES:
        settings["type"] = OPTION_TYPES[name]
    elif get_origin(kind) is Literal:
        settings["type"] = click.Choice(get_args(kind))
    elif kind is bool:
        pass  # a --x/--no-x flag: its names say so
    elif get_origin(kind) is list and get_args(kind) == (str,):
        settings.update(multiple=True, show_default=False)
    elif kind is int:
        # llama.cpp counts in int32: a larger count on the command line is a mistake, even where
        # the settings leave it unbounded (a server clamps a huge max_tokens instead).
        settings["type"] = click.IntRange(**{"max": INT32_MAX, **_bounds(field)})
    elif kind is float:
        settings["type"] = FiniteFloat(**_bounds(field))
    elif kind is not str:
        raise TypeError(f"GenerationSettings.{name}: no command-line type for {field.annotation}")
    return click.option(*names, name, **settings)


def generation_options(
    include: Sequence[str] | None = None, exclude: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> Callable:
    """Decorator: an option per GenerationSettings field (those in `include`, all by default, less
    `exclude`), with `defaults` overriding the model's where this command's differ. The command
    receives their values as one dict, `settings_values` (field name -> value)."""
    defaults = defaults or {}
    fields = {
        name: field
        for name, field in GenerationSettings.model_fields.items()
        if (include is None or name in include) and name not in exclude
    }
    unknown = set(defaults) - set(fields)
    if unknown:
        raise ValueError(f"defaults for fields the command has no option for: {sorted(unknown)}")

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def command(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in fields}
            values.update(pair_defaults(values))
            if "stop" in values:
                values["stop"] = list(values["stop"])
            return f(*args, settings_values=values, **kwargs)

        # click.command reverses the decorators' list (they run bottom-up): add them last-first.
        for name, field in reversed(fields.items()):
            default = defaults.get(name, field.get_default(call_default_factory=True))
            command = settings_option(name, field, default)(command)
        return command

    return decorate


def given(ctx: click.Context, name: str) -> bool:
    """Whether the option `name` was set by the user (command line, environment), not left at its default."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def pair_defaults(names: Iterable[str]) -> dict[str, Any]:
    """The chosen pair's settings for the options among `names` the user did not set: a pair's
    values replace the command's defaults, and the options given on the command line replace them."""
    ctx = click.get_current_context()
    chosen = chosen_pair(ctx)
    if chosen is None:
        return {}
    return {name: value for name, value in chosen.settings.items() if name in names and not given(ctx, name)}


def checked_settings(settings_values: dict[str, Any], anti: str | None) -> GenerationSettings:
    """The command's settings, refused in one line before any model loads if a value is bad or the
    method needs an anti model that --anti does not give."""
    settings = GenerationSettings.checked(**settings_values)
    check_anti(settings.method, anti is not None)
    return settings


# -- the models --------------------------------------------------------------------------------

PAIR_META = "blendin.pair"


def chosen_pair(ctx: click.Context) -> PairEntry | None:
    """The registry pair of a command that loads models: --pair, else the default pair (read once
    per command). None for a command without model options."""
    if "pair_name" not in ctx.params:
        return None
    if PAIR_META not in ctx.meta:
        ctx.meta[PAIR_META] = registry.pair_entry(ctx.params["pair_name"] or registry.DEFAULT_PAIR)
    return ctx.meta[PAIR_META]


@dataclass(frozen=True)
class ModelChoice:
    """What the model options of a command name: the files, and how llama.cpp loads them."""

    base: str | None  # as given: None is the pair's
    guide: str | None
    anti: str | None
    ctx_size: int
    threads: int | None
    gpu_layers: int | None
    repack: str | None
    pair_entry: PairEntry  # --pair's, or the default pair

    def load(self, threads: int | None = None) -> BlendPair:
        """The pair these options name (local, remote or mixed), with `threads` if given."""
        options = LoadOptions(
            n_ctx=self.ctx_size, n_threads=threads or self.threads, gpu_layers=self.gpu_layers, repack=self.repack
        )
        return pair.load_pair(self.base, self.guide, self.anti, options, remote_settings(), self.pair_entry.name)


def model_options(f):
    """Options shared by every command that loads a pair; the command receives them as one
    ModelChoice, `models`."""

    @functools.wraps(f)
    def with_models(*args, base, guide, anti, ctx_size, threads, gpu_layers, repack, pair_name, **kwargs):
        ctx = click.get_current_context()
        chosen = chosen_pair(ctx)
        assert chosen is not None  # this command has --pair
        if chosen.ctx_size is not None and not given(ctx, "ctx_size"):
            ctx_size = chosen.ctx_size
        choice = ModelChoice(base, guide, anti, ctx_size, threads, gpu_layers, repack, chosen)
        return f(*args, models=choice, **kwargs)

    command = with_models
    for option in reversed(
        [
            click.option(
                "--pair",
                "pair_name",
                help="A registry pair (blendin pair list): its models, and its settings as the defaults"
                f" of the options not given [default: {registry.DEFAULT_PAIR}].",
            ),
            click.option("--base", help="Base model: registry name or GGUF path [default: the pair's]."),
            click.option("--guide", help="Guide model: registry name or GGUF path [default: the pair's]."),
            click.option("--anti", help="The guide's untuned counterpart, for --method proxy."),
            click.option(
                "-c",
                "--ctx-size",
                type=CTX_SIZE,
                default=4096,
                help="Context size of each model [default: the pair's, else 4096].",
            ),
            click.option(
                "-t",
                "--threads",
                type=click.IntRange(1, MAX_THREADS),
                default=None,
                help=f"CPU threads [default: {default_threads()}].",
            ),
            click.option(
                "-ngl",
                "--gpu-layers",
                "gpu_layers",
                type=click.IntRange(-1, INT32_MAX),
                default=None,
                help="Layers to offload to the GPU, -1 = all (Metal/CUDA/Vulkan builds of llama-cpp-python)"
                " [default: all where this build can offload, else 0].",
            ),
            click.option(
                "--repack",
                type=click.Choice(REPACK_SETTINGS),
                default=None,
                help="llama.cpp's AMX/repacked CPU kernels: auto tests once whether they run on this CPU,"
                f" on uses them, off avoids them (llama.cpp's --no-repack) [default: ${REPACK_ENV} or auto].",
            ),
            *remote_options(),
        ]
    ):
        command = option(command)
    return command


REMOTE_META = "blendin.remote"
# RemoteSettings fields whose options carry another name: `--top-k` and `--timeout` belong to
# other commands' own options (serve has both), and click warns on stderr when two share a name.
REMOTE_FIELDS = {"remote_top_k": "top_k", "remote_timeout": "timeout", "remote_retries": "retries"}


def remote_options() -> list:
    """--base-url and friends: a model on an OpenAI-compatible server (backends/remote.py). They are
    kept in the click context (not passed to each command) and read by ModelChoice.load."""

    def keep(ctx, param, value):
        field = REMOTE_FIELDS.get(param.name, param.name)
        ctx.meta.setdefault(REMOTE_META, {})[field] = value
        return value

    def option(*names, **kw):
        return click.option(*names, expose_value=False, callback=keep, **kw)

    formats = click.Choice(["text", "tokens"])
    return [
        option("--base-url", help="Run the base on a server: its OpenAI-compatible URL, e.g. http://host:8000/v1."),
        option("--base-model", help="The base's model name at --base-url [default: the first it lists]."),
        option(
            "--base-vocab",
            help="The base's vocabulary for --base-url: a GGUF file (vocab only), tokenizer.json or"
            " tokenizer.model [default: --base, else the default pair's base].",
        ),
        option(
            "--base-prompt-format",
            type=formats,
            default="text",
            show_default=True,
            help="Send the base's prompt as text (any server) or token ids (llama-server, vLLM).",
        ),
        option("--guide-url", help="Run the guide on a server (as --base-url)."),
        option("--guide-model", help="The guide's model name at --guide-url."),
        option("--guide-vocab", help="The guide's vocabulary for --guide-url (as --base-vocab)."),
        option(
            "--guide-prompt-format",
            type=formats,
            default="text",
            show_default=True,
            help="Send the guide's prompt as text or token ids.",
        ),
        option(
            "--logprobs",
            "remote_top_k",
            type=click.IntRange(1, INT32_MAX),
            default=20,
            show_default=True,
            help="Top log-probabilities asked of a server per token (vLLM: at most its --max-logprobs).",
        ),
        option(
            "--remote-timeout",
            type=FiniteFloat(0.1, 86400),
            default=60.0,
            show_default=True,
            help="Seconds to wait for one server answer.",
        ),
        option(
            "--remote-retries",
            type=click.IntRange(0, 10),
            default=3,
            show_default=True,
            help="Retries (with doubling waits) after a connection error or a 5xx answer.",
        ),
    ]


def remote_settings():
    """The remote options of the running command, if it has any."""
    from blendin_local.backends.remote import RemoteSettings

    ctx = click.get_current_context(silent=True)
    values = dict(ctx.meta.get(REMOTE_META, {})) if ctx is not None else {}
    # The options' defaults arrive through their callbacks, so `values` is complete or empty.
    return RemoteSettings(**values)
