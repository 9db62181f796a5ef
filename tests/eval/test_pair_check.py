"""`blendin pair check` (eval/pair_check.py, the rate curve and gamma suggestion in eval/diagnose.py):
the pure parts on hand-made numbers and with hypothesis, the whole check on scripted models, then on
the real default pair: its suggested gamma must put BlendIn's measured rate in the band when BlendIn is
re-run at it."""

import json

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.eval.diagnose import (
    GAMMA_GRID,
    NOT_WORTH_IT,
    TARGET_BAND,
    AnswerMeasures,
    intervention_rate,
    rate_curve,
    suggest_gamma,
)
from blendin_local.eval.pair_check import (
    INSTRUCTIONS,
    ModelForm,
    TimeEstimate,
    answer_records,
    base_top_ps,
    check_pair,
    duration_text,
    instruction_items,
    model_form,
)
from blendin_local.interfaces.cli.pair_check import check, report_lines
from blendin_local.pair import BlendPair

# -- the rate curve and the suggestion, pure ----------------------------------------------------------


def brute_rate(answers, gamma):
    """The definition, spelled out: per answer the share of steps below gamma, averaged."""
    shares = [sum(p < gamma for p in tops) / len(tops) if tops else 0.0 for tops in answers]
    return sum(shares) / len(shares) if shares else 0.0


def test_rates_on_hand_made_numbers():
    answers = [[0.1, 0.5, 0.9, 0.3], [0.95, 0.2]]
    assert intervention_rate(answers, 0.4) == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert intervention_rate(answers, 0.5) == pytest.approx((2 / 4 + 1 / 2) / 2)  # below, not at
    assert intervention_rate(answers, 0.51) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert intervention_rate([[0.1], []], 0.5) == 0.5  # an empty answer counts 0, as in GenerationResult
    assert rate_curve([], [0.2, 0.4]) == {0.2: 0.0, 0.4: 0.0}


def test_a_spread_of_confidences_gets_the_gamma_at_the_aim():
    suggestion = suggest_gamma([[i / 100 for i in range(100)]])
    assert suggestion.gamma == 0.1 and suggestion.implied_rate == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        ([[0.999] * 50, [1.0] * 30], "sure of its top token"),
        ([[0.004] * 40], "unsure almost everywhere"),
        ([[0.3] * 10 + [0.9] * 10], "jumps past 5%-20%"),
        ([], "no tokens"),
        ([[], []], "no tokens"),
    ],
)
def test_an_unreachable_band_is_explained(answers, why):
    suggestion = suggest_gamma(answers)
    assert suggestion.gamma is None and suggestion.implied_rate is None and why in suggestion.note


PROBABILITY = st.floats(0.0, 1.0, allow_nan=False)
ANSWERS = st.lists(st.lists(PROBABILITY, max_size=30), max_size=8)


@given(ANSWERS, st.lists(st.sampled_from(GAMMA_GRID), min_size=1, max_size=5))
def test_the_curve_is_the_definition(answers, gammas):
    curve = rate_curve(answers, gammas)
    assert all(curve[g] == pytest.approx(brute_rate(answers, g)) for g in gammas)


@given(ANSWERS)
def test_a_suggestion_is_in_the_band_or_explains_why_not(answers):
    suggestion = suggest_gamma(answers)
    reachable = [g for g in GAMMA_GRID if TARGET_BAND.low <= brute_rate(answers, g) <= TARGET_BAND.high]
    if suggestion.gamma is None:
        assert not reachable and suggestion.note
    else:
        assert suggestion.gamma in GAMMA_GRID and 0 < suggestion.gamma < 1
        rate = brute_rate(answers, suggestion.gamma)
        assert suggestion.implied_rate == pytest.approx(rate) and TARGET_BAND.holds(suggestion.implied_rate)
        closest = min(abs(brute_rate(answers, g) - TARGET_BAND.aim) for g in reachable)
        assert abs(rate - TARGET_BAND.aim) == pytest.approx(closest)


def test_measures_read_the_records_the_runner_writes():
    records = [
        {"intervention_rate": 0.5, "guide_ranks": [0, 20], "alphas": [0.6, 0.8], "base_top_p": [0.3, 0.9]},
        {"intervention_rate": 0.0, "guide_ranks": [], "alphas": [], "base_top_p": [0.95, None]},
    ]
    measured = AnswerMeasures.of(records)
    assert measured.rate == 0.25 and measured.guide_in_base_top_k == 0.5 and measured.mean_alpha == pytest.approx(0.7)
    assert measured.base_top_ps == [[0.3, 0.9], [0.95]]


# -- the models' form, the time estimate -----------------------------------------------------------------


def test_the_pretrained_heuristic():
    assert ModelForm(False, ()).looks_pretrained
    assert not ModelForm(True, ()).looks_pretrained
    assert not ModelForm(False, ("it",)).looks_pretrained
    assert "no chat template" in ModelForm(False, ()).describe()


class TemplatedModel(ScriptedModel):
    """A scripted model with GGUF-like metadata: a chat template and a name."""

    def __init__(self, name, pieces, rule, meta):
        super().__init__(name, pieces, rule)
        self.meta = meta

    def metadata(self, key):
        return self.meta.get(key)


CHAT = {"tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"}


def test_model_form_reads_the_template_and_the_names():
    assert model_form(ScriptedModel("gemma-3-270m", [EOS, b"a"], dict)).looks_pretrained
    assert model_form(ScriptedModel("gemma-3-4b-it", [EOS, b"a"], dict)).aligned_markers == ("it",)
    chat = model_form(TemplatedModel("m", [EOS, b"a"], dict, {**CHAT, "general.finetune": "Instruct-v2"}))
    assert chat.has_chat_template and chat.aligned_markers == ("instruct",)


def test_time_estimate():
    estimate = TimeEstimate.of(300, 1024, 50.0)
    assert estimate.seconds == pytest.approx(300 * 1024 / 50)
    assert duration_text(estimate.seconds) == "1 h 42 min"
    assert duration_text(30) == "30 s" and duration_text(600) == "10 min"


# -- the whole check on scripted models ----------------------------------------------------------------

PIECES = [EOS, b"tea", b" is", b" hot", b" cold", b".", b"\n"]
NEXT = {b"tea": b" is", b" is": b" hot", b" hot": b".", b".": b"\n"}  # after anything else: tea


def next_word(context):
    return NEXT.get(context[-1] if context else b"", b"tea")


def wavering_base(context):
    """Writes `tea is hot.` line after line; how sure it is of the next word depends on the position."""
    margin = (0.2, 3.0, 6.0, 1.0, 4.0, 0.5, 8.0)[len(context) % 7]  # logit lead of the right word over " cold"
    return {next_word(context): margin, b" cold": 0.0}


def agreeing_guide(context):
    """Proposes the base's own next word, so interventions never change the text."""
    return {next_word(context): 5.0}


def scripted_pair(guide_meta):
    base = ScriptedModel("base-270m", PIECES, wavering_base)
    guide = TemplatedModel("guide", PIECES, agreeing_guide, guide_meta)
    return BlendPair(base, guide, ScriptedPair(base, guide).bridge)


def test_the_curve_predicts_blendin_exactly_where_interventions_keep_the_text():
    # Position-based confidences and a guide that agrees with the base: the base's pass and BlendIn
    # write the same text, so the rate read off the base's pass at any gamma is BlendIn's rate.
    pair = scripted_pair(CHAT)
    result = check_pair(pair, max_tokens=21, gamma=0.4, long_run=(10, 100))
    assert result.base_looks_pretrained and result.guide_has_chat_template
    assert result.suggested_gamma is not None and TARGET_BAND.holds(result.suggested_gamma_rate)
    assert result.blendin_rate == pytest.approx(result.rate_curve[0.4])
    settings = GenerationSettings(max_tokens=21, gamma=result.suggested_gamma)
    rerun, _ = answer_records(pair, settings, instruction_items(), progress=False)
    assert AnswerMeasures.of(rerun).rate == pytest.approx(result.suggested_gamma_rate)
    assert result.estimate is not None and result.estimate.seconds > 0
    assert json.loads(json.dumps(result.as_dict()))["rate_curve"]["0.4"] == result.rate_curve[0.4]


def test_a_guide_without_chat_template_is_not_worth_it_and_blendin_is_not_run():
    result = check_pair(scripted_pair({}), max_tokens=7, gamma=0.4)
    assert result.exit_code == NOT_WORTH_IT and "chat template" in result.reason
    assert result.blendin_rate is None and result.estimate is None and result.rate_curve
    assert "verdict: not worth it" in report_lines(result)[-1]


# -- the command -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--gamma", "2"], ["-n", "0"], ["--items", "0"], ["--tokens", "x"], ["a", "--base", "b"], ["a", "b", "c"]],
)
def test_bad_input_is_a_usage_error_before_any_model_loads(args):
    result = CliRunner().invoke(check, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Error:" in result.output and "Traceback" not in result.output


def test_an_unknown_model_is_one_blendin_error():
    result = CliRunner().invoke(check, ["no-such-model-anywhere"])
    assert isinstance(result.exception, BlendinError) and "\n" not in str(result.exception)


def test_it_is_a_click_command_named_check():
    assert isinstance(check, click.Command) and check.name == "check"
    assert len(INSTRUCTIONS) == 20 and len(set(INSTRUCTIONS)) == 20


# -- on the real default pair ------------------------------------------------------------------------


@pytest.mark.models
def test_the_suggested_gamma_puts_blendins_rate_in_the_band(default_pair):
    # check_pair's own suggestion, without its BlendIn pass at 0.4 (the command test runs that):
    # two passes of 20 answers instead of three keep the test short on a shared 2-core machine.
    items = instruction_items()
    suggestion = suggest_gamma(base_top_ps(default_pair, 48, items, progress=False))
    assert suggestion.gamma is not None, suggestion.note
    rerun, _ = answer_records(default_pair, GenerationSettings(max_tokens=48, gamma=suggestion.gamma), items, False)
    measured = AnswerMeasures.of(rerun).rate
    assert TARGET_BAND.holds(measured), (suggestion, measured)


@pytest.mark.models
def test_the_command_prints_one_json_object_and_exits_with_the_verdict():
    result = CliRunner().invoke(check, ["-n", "8", "-t", "1", "--json", "--items", "10", "--tokens", "100"])
    data = json.loads(result.stdout)
    assert result.exit_code == data["exit_code"] in (0, 3, 4), result.stderr
    assert data["n_instructions"] == 20 and data["max_tokens"] == 8 and data["estimate"]["items"] == 10
    assert data["exact_pct"] > 90 and data["guide_has_chat_template"] and data["base_looks_pretrained"]
    assert set(data["rate_curve"]) >= {"0.2", "0.4", "0.8"} and 0 <= data["blendin_rate"] <= 1
    assert data["tokens_per_s"] > 0 and data["estimate"]["seconds"] > 0
