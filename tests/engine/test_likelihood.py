"""Scoring forced text: one batch for a single model, step by step for blended methods."""

import pytest

from blendin_local.engine.generation import GenerationSettings
from blendin_local.engine.likelihood import forced_logprob
from blendin_local.engine.prompts import Message
from blendin_local.errors import BlendinError

pytestmark = pytest.mark.models

MESSAGES = [Message("user", "What is the capital of France?")]


def score(pair, text, **settings):
    return forced_logprob(pair.start(MESSAGES, GenerationSettings(**settings)), "Answer:", text)


def test_alpha_zero_scores_like_the_base(default_pair):
    stepwise = score(default_pair, " Paris, of course.", method="blendin", alpha=0.0)
    batched = score(default_pair, " Paris, of course.", method="base")
    assert stepwise == batched
    assert stepwise == score(default_pair, " Paris, of course.", method="blendin", alpha=0.0, gamma=1.01)


def test_likely_text_scores_higher(default_pair):
    for method in ("base", "guide", "blendin", "ensemble"):
        assert score(default_pair, " Paris", method=method) > score(default_pair, " Banana", method=method), method


def test_scores_are_log_probabilities(default_pair):
    assert score(default_pair, " Paris", method="blendin") < 0.0
    assert score(default_pair, "", method="guide") == 0.0


def test_nudging_has_no_distribution(default_pair):
    with pytest.raises(BlendinError, match="no token distribution"):
        score(default_pair, " Paris", method="nudging")
