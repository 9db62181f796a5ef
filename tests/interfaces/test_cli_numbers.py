"""Bad numbers on the command line: one line on stderr and exit code 2 (a usage error) or 1, before
any model loads (issue 11). Runs `blendin` in this process with every way of loading a model
replaced by a failure, so a value that got as far as a load fails the test."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local import pair
from blendin_local.backends import llama as llama_backend
from blendin_local.backends.registry import MODELS_DIR_ENV
from blendin_local.interfaces import cli


class ModelLoadBegan(Exception):
    pass


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch, tmp_path):
    models = tmp_path / "models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))  # a load would assemble the base model here

    def load(*args, **kwargs):
        raise ModelLoadBegan

    monkeypatch.setattr(pair, "load_pair", load)  # the one loader of every command and the API
    monkeypatch.setattr(llama_backend.LlamaModel, "__init__", load)
    yield
    assert not models.exists() or not any(models.iterdir())


def run(capsys, *args: str) -> tuple[int, list[str]]:
    """blendin's exit code and stderr lines; ModelLoadBegan if the command got as far as loading."""
    with pytest.raises(SystemExit) as stop:
        cli.main(list(args))
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


# (option, the settings field a message may name instead, a negative value that is wrong)
GENERATION = [
    ("--temp", "temperature", "-1"),
    ("--top-p", "top_p", "-1"),
    ("--top-k", "top_k", "-1"),
    ("--min-p", "min_p", "-1"),
    ("--gamma", "gamma", "-1"),
    ("--alpha", "alpha", "-1"),
    ("--max-tokens", "max_tokens", "-1"),
    ("--seed", "seed", "-1"),
    ("--nudging-chunk", "nudging_chunk", "-1"),
]
LOADING = [
    ("--ctx-size", "ctx_size", "-1"),
    ("--threads", "threads", "-1"),
    ("--gpu-layers", "gpu_layers", "-2"),
    ("--logprobs", "remote_top_k", "-1"),
    ("--remote-timeout", "timeout", "-1"),
    ("--remote-retries", "retries", "-1"),
]
NOT_NUMBERS = ["nan", "inf", "-inf", "1e308", str(10**30), "", "1e400", "12abc"]
COMMANDS = {
    "generate": (["generate", "hi"], GENERATION + LOADING),
    "chat": (["chat"], GENERATION + LOADING),
    "serve": (["serve", "--port", "1"], GENERATION + LOADING + [("--port", "port", "-1")]),
    "eval": (
        ["eval", "--dataset", "gsm8k", "--out", "unused-run"],
        [o for o in GENERATION if o[0] in ("--temp", "--gamma", "--alpha", "--max-tokens", "--seed", "--nudging-chunk")]
        + [("--jobs", "jobs", "-1"), ("--limit", "limit", "-1")]
        + LOADING,
    ),
    "diagnose": (
        ["diagnose"],
        [("--limit", "limit", "-1"), ("--max-tokens", "max_tokens", "-1"), ("--gamma", "gamma", "-1")] + LOADING,
    ),
}
# Values that are numbers a command takes: the huge limit means every item, any integer seeds.
ACCEPTED = {("--limit", str(10**30))}
CASES = [
    pytest.param(command, option, field, value, id=f"{command} {option} {value!r}")
    for command, (_, options) in COMMANDS.items()
    for option, field, negative in options
    for value in [*NOT_NUMBERS, negative]
    if (option, value) not in ACCEPTED
]


@pytest.mark.parametrize("command, option, field, value", CASES)
def test_a_bad_number_is_one_line_before_any_model_loads(capsys, command, option, field, value):
    code, lines = run(capsys, *COMMANDS[command][0], option, value)
    assert code in (1, 2) and len(lines) == 1, (code, lines)
    assert option in lines[0] or field in lines[0], lines[0]


def test_a_good_number_gets_as_far_as_loading(capsys):
    """The counterpart: without it, a loader that is never reached would pass every case above."""
    with pytest.raises(ModelLoadBegan):
        cli.main(["generate", "hi", "--temp", "0.5", "--threads", "1", "--max-tokens", "3"])


# Every text for the options that take a float in a range: refused in one line, or a finite
# number in the documented range that gets as far as loading.
RANGES = {
    "--temp": (0.0, 100.0, True),
    "--top-p": (0.0, 1.0, False),
    "--min-p": (0.0, 1.0, True),
    "--gamma": (0.0, 1.01, True),
    "--alpha": (0.0, 1.0, True),
}
texts = st.one_of(
    st.floats().map(repr),
    st.floats(-2, 2).map(str),
    st.text(max_size=12),
    st.sampled_from(["nan", "-nan", "NaN", "inf", "+inf", "Infinity", "-0", " 0.5 ", "1_0", "0x1p-2"]),
)


# The fixtures are the same for every example (the loaders replaced, the models folder empty)
# and capsys is read after each run.
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(RANGES)), texts)
def test_float_options_take_only_finite_numbers_in_range(capsys, option, value):
    low, high, low_included = RANGES[option]
    try:
        code, lines = run(capsys, "generate", "hi", option, value)
    except ModelLoadBegan:
        if option == "--alpha" and value == "auto":
            return
        number = float(value)
        assert math.isfinite(number) and (low <= number if low_included else low < number) and number <= high, value
        return
    assert code in (1, 2) and len(lines) == 1, (code, lines)
