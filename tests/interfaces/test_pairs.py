"""The user registry and named pairs: `blendin models add`, `blendin pair add/list/remove`, and
--pair NAME on the commands that load models. Every test has its own $XDG_CONFIG_HOME."""

import importlib
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import click
import pytest
import tomlkit
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends import registry as reg
from blendin_local.errors import BlendinError
from blendin_local.interfaces.cli import main
from blendin_local.interfaces.cli.options import generation_options, model_options

BASE, GUIDE = "gemma3-270m", "smollm2-135m-instruct"


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """The user registry's path, in a folder of the test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "blendin" / "registry.toml"


def write_registry(path: Path, data: dict | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else tomlkit.dumps(data).encode())


def run(*args: str) -> tuple[int, str, str]:
    """`blendin ARGS` in this process, as the console script runs it: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def blendin(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    """`blendin ARGS` in a fresh process whose $XDG_CONFIG_HOME is `env_home`."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(env_home)}
    return subprocess.run(
        [sys.executable, "-m", "blendin_local", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blendin: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- the registry: reading, overriding, resolving ------------------------------------------------


def test_without_a_user_registry_the_packaged_one_is_read(config):
    assert not config.exists()
    entry = reg.pair_entry(reg.DEFAULT_PAIR)
    assert (entry.base, entry.guide, dict(entry.settings), entry.ctx_size, entry.user) == (BASE, GUIDE, {}, None, False)


def test_user_entries_override_packaged_ones(config, tmp_path):
    write_registry(
        config,
        {
            "models": {BASE: {"path": "elsewhere/gemma.gguf", "role": "base"}, "llama": {"spec": "ollama:llama3.2:1b"}},
            "pairs": {"default": {"base": "llama", "guide": GUIDE, "gamma": 0.7, "alpha": "auto"}},
        },
    )
    registry = reg.load_registry()
    assert BASE not in registry.models and GUIDE in registry.models  # the packaged entry is replaced
    # A relative path is the registry file's folder's.
    assert reg.model_spec(BASE, registry) == str(config.parent / "elsewhere" / "gemma.gguf")
    assert reg.resolve_model(BASE, registry) == config.parent / "elsewhere" / "gemma.gguf"
    assert reg.model_spec("llama", registry) == "ollama:llama3.2:1b"
    default = reg.pair_entry("default", registry)
    assert (default.base, default.user, dict(default.settings)) == ("llama", True, {"gamma": 0.7, "alpha": None})
    assert reg.resolve_pair("default", registry) == ("llama", GUIDE)


def test_a_user_model_that_leads_back_to_itself_is_one_error(config):
    write_registry(config, {"models": {"a": {"spec": "b"}, "b": {"spec": "a"}, "c": {"spec": "c"}}})
    with pytest.raises(BlendinError, match=r"user model 'a' leads back to itself \(a -> b -> a\)"):
        reg.resolve_model("a")
    with pytest.raises(BlendinError, match="leads back to itself"):
        reg.model_spec("c")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"[pairs.x\nbase = 1", "not valid TOML"),
        (b"\xff\xfe[pairs]", "not UTF-8"),
        (b"a = " + b"[" * 100_000, "not valid TOML"),  # nesting deep enough to exhaust the recursion limit
        (b"#" * (reg.MAX_REGISTRY_BYTES + 1), "larger than 1 MiB"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a", "guide": "b", "gamma": "0.5"}}}).encode(), "pairs.x.gamma"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a", "guide": "b", "gamma": 3.0}}}).encode(), "invalid gamma"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a", "guide": "b", "alpha": True}}}).encode(), "pairs.x.alpha"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a", "guide": "b", "ctx_size": 8}}}).encode(), "pairs.x.ctx_size"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a", "guide": "b", "gama": 1}}}).encode(), "unknown key 'gama'"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a"}}}).encode(), "pairs.x: no guide"),
        (tomlkit.dumps({"pairs": {"x y": {"base": "a", "guide": "b"}}}).encode(), "pair name 'x y'"),
        (tomlkit.dumps({"pairs": {"x": {"base": "a\nb", "guide": "b"}}}).encode(), "control character"),
        (tomlkit.dumps({"models": {"m": {"spec": "a", "path": "b"}}}).encode(), "either spec or path"),
        (tomlkit.dumps({"models": {"m": {"spec": "a", "role": "judge"}}}).encode(), "models.m.role"),
        (tomlkit.dumps({"models": ["m"]}).encode(), "models is not a table"),
        (tomlkit.dumps({"model": {}}).encode(), "unknown table 'model'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_bad_registry_file_is_one_line_naming_it(config, content, needle):
    write_registry(config, content)
    code, _, err = run("pair", "list")
    assert code == 1
    assert_one_line(err, str(config), needle)


def test_a_registry_that_is_not_a_file_is_one_line(config):
    config.mkdir(parents=True)
    code, _, err = run("pair", "list")
    assert code == 1
    assert_one_line(err, str(config), "not a regular file")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400))
def test_any_bytes_as_the_registry_read_or_fail_in_one_line(config, content):
    write_registry(config, content)
    try:
        reg.load_registry()
    except BlendinError as e:
        assert len(str(e).splitlines()) == 1 and str(e).startswith(str(config))


TOML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["auto", "plain", "chat", "{prompt}", GUIDE, "/x.gguf"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from([*reg.PAIR_KEYS, *reg.USER_MODEL_KEYS]) | st.text(max_size=8)
ENTRIES = st.dictionaries(
    st.sampled_from(["x", "default", GUIDE, "a b"]) | st.text(max_size=8),
    st.dictionaries(KEYS, TOML_VALUES, max_size=6) | TOML_VALUES,
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=st.dictionaries(st.sampled_from(["models", "pairs", "other"]), ENTRIES | TOML_VALUES, max_size=2))
def test_any_registry_tables_read_or_fail_in_one_line(config, tables):
    """Well-formed TOML of any shape: only the checks of the entries stand between it and the code."""

    def without_none(value):  # TOML has no null
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [without_none(v) for v in value if v is not None]
        return value

    write_registry(config, without_none(tables))
    try:
        registry = reg.load_registry()
        for name in registry.pairs:
            reg.pair_entry(name, registry)
        for name in registry.user_models:
            reg.model_spec(name, registry)
    except BlendinError as e:
        assert len(str(e).splitlines()) == 1, str(e)


# -- the commands --------------------------------------------------------------------------------


def test_pair_add_list_and_remove(config):
    code, out, err = run("pair", "add", "mine", "--base", BASE, "--guide", GUIDE, "--gamma", "0.6", "--alpha", "auto")
    assert code == 0, err
    assert str(config) in out
    code, out, _ = run("pair", "list", "--json")
    pairs = {p["name"]: p for p in json.loads(out)}
    assert pairs["mine"] == {
        "name": "mine",
        "base": BASE,
        "guide": GUIDE,
        "settings": {"gamma": 0.6, "alpha": "auto"},
        "source": "user",
    }
    assert pairs["default"]["source"] == "packaged"
    code, out, _ = run("pair", "list")
    assert "mine" in out and "gamma=0.6 alpha=auto (yours)" in out

    code, _, err = run("pair", "add", "mine", "--base", BASE, "--guide", GUIDE)
    assert code == 1
    assert_one_line(err, "pair 'mine' exists", "--force")
    assert run("pair", "add", "mine", "--base", GUIDE, "--guide", GUIDE, "--force")[0] == 0
    assert reg.pair_entry("mine").base == GUIDE and not reg.pair_entry("mine").settings  # replaced whole

    assert run("pair", "remove", "mine")[0] == 0
    assert "mine" not in reg.load_registry().pairs
    code, _, err = run("pair", "remove", "mine")
    assert code == 1
    assert_one_line(err, "unknown pair 'mine'", "known: default")
    code, _, err = run("pair", "remove", "default")
    assert code == 1
    assert_one_line(err, "packaged")


def test_removing_a_users_default_brings_the_packaged_one_back(config):
    assert run("pair", "add", "default", "--base", GUIDE, "--guide", GUIDE)[0] == 1  # exists: needs --force
    assert run("pair", "add", "default", "--base", GUIDE, "--guide", GUIDE, "--force")[0] == 0
    assert reg.resolve_pair("default") == (GUIDE, GUIDE)
    assert run("pair", "remove", "default")[0] == 0
    assert reg.resolve_pair("default") == (BASE, GUIDE)
    assert "pairs" not in reg.read_registry_file(config)


def test_writing_keeps_the_other_entries(config):
    write_registry(config, {"models": {"llama": {"spec": "ollama:llama3.2:1b", "description": "mine"}}})
    assert run("pair", "add", "p", "--base", "llama", "--guide", GUIDE, "--no-check")[0] == 0
    assert run("models", "add", "other", GUIDE)[0] == 0
    data = reg.read_registry_file(config)
    assert data["models"]["llama"] == {"spec": "ollama:llama3.2:1b", "description": "mine"}
    assert data["models"]["other"] == {"spec": GUIDE} and data["pairs"]["p"] == {"base": "llama", "guide": GUIDE}
    # no temporary file left behind; the lock that lets one blendin at a time change the file stays
    assert sorted(p.name for p in config.parent.iterdir()) == [".registry.toml.lock", "registry.toml"]


def test_pair_add_checks_that_the_models_resolve(config):
    code, _, err = run("pair", "add", "p", "--base", "nope", "--guide", GUIDE)
    assert code == 1
    assert_one_line(err, "pair 'p' does not resolve", "unknown model 'nope'")
    code, _, err = run("pair", "add", "p", "--base", "/no/such.gguf", "--guide", GUIDE)
    assert_one_line(err, "/no/such.gguf: no such file")
    assert not config.exists()
    assert run("pair", "add", "p", "--base", "nope", "--guide", GUIDE, "--no-check")[0] == 0


def test_models_add_stores_an_absolute_path_and_pairs_use_it(config, tmp_path, monkeypatch):
    guide_file = reg.resolve_model(GUIDE)
    (tmp_path / "link.gguf").symlink_to(guide_file)
    monkeypatch.chdir(tmp_path)
    code, _, err = run("models", "add", "mysmol", "link.gguf", "--role", "guide", "--prompt", "chat")
    assert code == 0, err
    entry = reg.load_registry().user_models["mysmol"]
    assert (entry.spec, entry.is_path, entry.role, entry.prompt) == (str(guide_file), True, "guide", "chat")
    assert run("pair", "add", "p", "--base", BASE, "--guide", "mysmol")[0] == 0
    assert reg.resolve_model(reg.pair_entry("p").guide) == guide_file
    code, _, err = run("models", "add", GUIDE, "mysmol")
    assert code == 1
    assert_one_line(err, f"model '{GUIDE}' exists in the packaged registry", "--force")
    # An entry that names itself is refused when it is added, not at its first use.
    code, _, err = run("models", "add", "loop", "loop")
    assert_one_line(err, "does not resolve", "leads back to itself (loop -> loop)")
    code, _, err = run("models", "add", "mysmol", "mysmol", "--force")
    assert_one_line(err, "leads back to itself")


def test_models_remove_keeps_the_file_and_what_still_names_the_model(config, tmp_path):
    guide_file = reg.resolve_model(GUIDE)
    assert run("models", "add", "mysmol", str(guide_file))[0] == 0
    assert run("models", "add", "alias", "mysmol")[0] == 0
    assert run("pair", "add", "p", "--base", BASE, "--guide", "mysmol")[0] == 0
    code, _, err = run("models", "remove", "mysmol")  # the pair and the alias would name nothing
    assert code == 1
    assert_one_line(err, "model 'mysmol' is named by pair p, model alias", "remove or change those first")
    assert run("pair", "remove", "p")[0] == 0 and run("models", "remove", "alias")[0] == 0
    code, out, err = run("models", "remove", "mysmol")
    assert code == 0 and out == f"model mysmol removed from {config}\n", err
    assert guide_file.is_file() and "models" not in reg.read_registry_file(config)
    code, _, err = run("models", "remove", "mysmol")
    assert code == 1
    assert_one_line(err, "'mysmol' is not a model of your registry (yours: none)")
    code, _, err = run("models", "remove", GUIDE)
    assert code == 1
    assert_one_line(err, f"model '{GUIDE}' is packaged")
    # Yours replacing a packaged model: the packaged one comes back, so what names it still works.
    assert run("models", "add", GUIDE, str(tmp_path / "x.gguf"), "--force", "--no-check")[0] == 0
    assert run("pair", "add", "q", "--base", BASE, "--guide", GUIDE, "--no-check")[0] == 0
    assert run("models", "remove", GUIDE)[0] == 0
    assert reg.resolve_model(reg.pair_entry("q").guide) == guide_file


@pytest.mark.parametrize(
    "args, needle, code",
    [
        (["pair", "add", "a/b", "--base", BASE, "--guide", GUIDE], "pair name 'a/b'", 1),
        (["pair", "add", "x" * 65, "--base", BASE, "--guide", GUIDE], "is not 1 to 64", 1),
        (["pair", "add", "p", "--base", BASE, "--guide", GUIDE, "--gamma", "2"], "--gamma", 2),
        (["pair", "add", "p", "--base", BASE, "--guide", GUIDE, "--alpha", "1.5"], "invalid alpha", 1),
        (["pair", "add", "p", "--base", BASE, "--guide", GUIDE, "--base-prompt", "{x}"], "--base-prompt", 2),
        (["pair", "add", "p", "--base", BASE, "--guide", GUIDE, "-c", "8"], "--ctx-size", 2),
        (["pair", "add", "p", "--guide", GUIDE], "--base", 2),
        (["models", "add", "m", "x", "--role", "judge"], "--role", 2),
    ],
)
def test_bad_names_and_values_are_one_line(config, args, needle, code):
    got, _, err = run(*args)
    assert got == code
    assert_one_line(err, needle)
    assert not config.exists()


# Arguments a user could type: any text, option-looking or not.
ARGUMENT = st.text(max_size=30) | st.sampled_from([BASE, GUIDE, "auto", "-1", "nan", "1e999", "0.5", "--force"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=ARGUMENT,
    base=ARGUMENT,
    options=st.lists(
        st.tuples(
            st.sampled_from(["--gamma", "--alpha", "--base-prompt", "--guide-prompt", "-c", "--description"]),
            ARGUMENT,
        ),
        max_size=3,
    ),
    flags=st.lists(st.sampled_from(["--force", "--no-check"]), max_size=2, unique=True),
)
def test_any_pair_add_succeeds_or_fails_in_one_line(config, name, base, options, flags):
    args = ["pair", "add", name, "--base", base, "--guide", GUIDE, *[x for pair in options for x in pair], *flags]
    code, _, err = run(*args)
    if code == 0:
        entry = reg.pair_entry(name)  # what was written reads back
        assert entry.guide == GUIDE
    else:
        assert code in (1, 2)
        assert_one_line(err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(added=st.lists(ARGUMENT, max_size=3), removed=ARGUMENT)
def test_any_models_remove_succeeds_or_fails_in_one_line(config, added, removed):
    config.unlink(missing_ok=True)
    for name in added:
        run("models", "add", name, GUIDE)
    before = set(reg.load_registry().user_models)
    code, _, err = run("models", "remove", removed)
    after = set(reg.load_registry().user_models)
    if code == 0:
        assert after == before - {removed} and removed in before
    else:
        assert code in (1, 2) and after == before
        assert_one_line(err)


# -- --pair on the commands that load models -----------------------------------------------------


@click.command()
@generation_options()
@model_options
def show_choice(settings_values, models):
    """What a command that loads models would get, without loading them."""
    click.echo(
        json.dumps(
            {**settings_values, "ctx_size": models.ctx_size, "base": models.base, "pair": models.pair_entry.name}
        )
    )


def choice(*args: str) -> dict:
    result = CliRunner().invoke(show_choice, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_pairs_settings_are_defaults_that_given_options_override(config):
    write_registry(
        config,
        {
            "pairs": {
                "p": {
                    "base": BASE,
                    "guide": GUIDE,
                    "gamma": 0.9,
                    "alpha": 0.3,
                    "guide_prompt": "plain",
                    "ctx_size": 512,
                }
            }
        },
    )
    pair = choice("--pair", "p")
    assert (pair["gamma"], pair["alpha"], pair["guide_prompt"], pair["ctx_size"]) == (0.9, 0.3, "plain", 512)
    assert pair["base"] is None and pair["pair"] == "p"  # the pair's base is used when --base is not given
    # Given on the command line, even at the option's own default, an option wins over the pair.
    flags = choice("--pair", "p", "--gamma", "0.4", "--alpha", "auto", "--guide-prompt", "chat", "-c", "4096")
    assert (flags["gamma"], flags["alpha"], flags["guide_prompt"], flags["ctx_size"]) == (0.4, None, "chat", 4096)
    assert choice("--pair", "p", "--base", GUIDE)["base"] == GUIDE
    plain = choice()
    assert (plain["gamma"], plain["ctx_size"], plain["pair"]) == (0.4, 4096, "default")


@pytest.mark.parametrize("command", ["generate", "chat", "serve", "eval", "diagnose"])
def test_every_command_that_loads_models_takes_pair(command):
    from blendin_local.interfaces.cli import cli

    assert "pair_name" in {param.name for param in cli.commands[command].params}


def test_without_pair_a_users_default_pair_gives_the_defaults(config):
    write_registry(config, {"pairs": {"default": {"base": BASE, "guide": GUIDE, "gamma": 0.2}}})
    assert choice()["gamma"] == 0.2


def test_an_unknown_pair_is_one_line_listing_the_known_ones(config):
    code, _, err = run("generate", "--pair", "nope", "-n", "4", "hi")
    assert code == 1
    assert_one_line(err, "unknown pair 'nope'", "known: default")


def test_serve_takes_the_pairs_settings_as_the_requests_defaults(config, monkeypatch):
    pytest.importorskip("fastapi")
    from blendin_local.interfaces.cli import options
    from blendin_local.interfaces.server import app

    serve = importlib.import_module(
        "blendin_local.interfaces.cli.serve"
    )  # the module: the package names the command so

    class Loaded:
        def close(self):
            pass

    class Served(Exception):
        pass

    seen = {}

    def create_app(pair, **kwargs):
        seen.update(kwargs)
        raise Served

    class Socket:
        def close(self):
            pass

    monkeypatch.setattr(options.ModelChoice, "load", lambda self, threads=None: Loaded())
    monkeypatch.setattr(serve, "listen", lambda host, port: Socket())
    monkeypatch.setattr(app, "create_app", create_app)
    write_registry(config, {"pairs": {"p": {"base": BASE, "guide": GUIDE, "gamma": 0.9, "base_prompt": "chat"}}})
    with pytest.raises(Served):
        CliRunner().invoke(serve.serve, ["--pair", "p", "--temp", "0.5"], catch_exceptions=False)
    defaults = seen["defaults"]
    assert (defaults.gamma, defaults.base_prompt, defaults.temperature) == (0.9, "chat", 0.5)
    assert "p" in seen["aliases"] and "blendin:p->p" in seen["aliases"]


@pytest.mark.models
def test_a_named_pair_survives_a_fresh_process_and_flags_win(tmp_path):
    home = tmp_path / "config"
    added = blendin("pair", "add", "everytoken", "--base", BASE, "--guide", GUIDE, "--gamma", "1.01", env_home=home)
    assert added.returncode == 0, added.stderr
    # gamma 1.01 consults the guide at every token; given on the command line, gamma 0 never does.
    for extra, interventions in (([], 4), (["--gamma", "0"], 0)):
        proc = blendin("generate", "--pair", "everytoken", "-n", "4", "--json", *extra, "Hi", env_home=home)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["n_tokens"] == 4 and data["n_interventions"] == interventions, data


def test_every_command_that_takes_a_model_name_takes_a_user_model(config):
    # resolve_model reads user models itself, so `models path` and `models bridge` take them too,
    # not only the commands that load a pair.
    real = reg.resolve_model(GUIDE)
    write_registry(config, {"models": {"mine": {"path": str(real)}, "alias": {"spec": "mine"}}})
    code, out, err = run("models", "path", "alias")
    assert code == 0 and out.strip() == str(real), err
    code, out, err = run("models", "bridge", "mine", "alias")
    assert code == 0 and "100.00%" in out, err
