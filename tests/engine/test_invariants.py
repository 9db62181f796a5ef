"""The method's invariants on the real default pair (greedy, 64 tokens, 22 varied prompts).

1. blendin with alpha = 0 (any gamma) is the base, byte for byte.
2. blendin with alpha = 1 and gamma = 1.01 (always intervene) is the guide: on the default
   cross-tokenizer pair it must reproduce every byte of the guide's 64 tokens (tests/alpha_one.py);
   with the same file as base and guide, exactly.
3. A model blended with itself, any alpha and gamma, is that model alone.
4. Sampling: the same seed gives the same text, different seeds differ.
"""

import pytest
from alpha_one import blend_and_guide_texts
from paper import PAPERS_BLENDIN
from prompts import INVARIANT_PROMPTS

from blendin_local.engine.generation import GenerationSettings

pytestmark = pytest.mark.models

N = 64


def generate(pair, prompt, **settings):
    max_tokens = settings.pop("max_tokens", N)
    return pair.generate(prompt, GenerationSettings(max_tokens=max_tokens, **{**PAPERS_BLENDIN, **settings}))


@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS)
def test_alpha_zero_is_the_base(default_pair, prompt):
    base = generate(default_pair, prompt, method="base").text
    assert generate(default_pair, prompt, method="blendin", alpha=0.0).text == base
    always = generate(default_pair, prompt, method="blendin", alpha=0.0, gamma=1.01)
    assert always.text == base
    assert always.n_interventions == always.n_tokens  # the guide was asked every time, and ignored


def test_alpha_one_always_on_is_the_guide(default_pair):
    matches, misses = 0, []
    for prompt in INVARIANT_PROMPTS:
        guide, blend, same = blend_and_guide_texts(default_pair, prompt, N)
        if same:
            matches += 1
        else:
            misses.append((prompt, guide, blend))
    print(f"\nalpha=1, always on, default pair: {matches}/{len(INVARIANT_PROMPTS)} reproduce the guide")
    assert matches >= 0.9 * len(INVARIANT_PROMPTS), misses


@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS)
def test_alpha_one_always_on_is_the_guide_with_one_file(smollm_self_pair, prompt):
    styles = dict(base_prompt="chat", guide_prompt="chat")
    guide = generate(smollm_self_pair, prompt, method="guide", **styles)
    assert generate(smollm_self_pair, prompt, method="blendin", alpha=1.0, gamma=1.01, **styles).text == guide.text


SELF_BLENDS = [dict(method="blendin"), dict(method="blendin", alpha=0.3, gamma=0.8), dict(method="ensemble")]


@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS)
def test_smollm_blended_with_itself_is_itself(smollm_self_pair, prompt):
    styles = dict(base_prompt="chat", guide_prompt="chat")
    alone = generate(smollm_self_pair, prompt, method="base", **styles).text
    for settings in SELF_BLENDS:
        assert generate(smollm_self_pair, prompt, **settings, **styles).text == alone, settings


@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS[::2])
def test_gemma_blended_with_itself_is_itself(gemma_self_pair, prompt):
    styles = dict(base_prompt="plain", guide_prompt="plain")
    alone = generate(gemma_self_pair, prompt, method="base", **styles).text
    for settings in SELF_BLENDS[:2]:
        assert generate(gemma_self_pair, prompt, **settings, **styles).text == alone, settings


@pytest.mark.parametrize("method", ["base", "guide", "blendin", "nudging"])
def test_same_seed_same_text_different_seeds_differ(default_pair, method):
    prompt = "Write a short story about a cat."
    runs = {
        seed: generate(default_pair, prompt, method=method, temperature=1.0, seed=seed, max_tokens=32).text
        for seed in (1, 1, 2, 3)
    }
    again = generate(default_pair, prompt, method=method, temperature=1.0, seed=1, max_tokens=32).text
    assert again == runs[1]
    assert len({runs[1], runs[2], runs[3]}) > 1


def test_a_repeated_request_gives_the_same_text(default_pair):
    first = generate(default_pair, "Why is the sky blue?", method="blendin").text
    generate(default_pair, "Name three rivers in Europe.", method="blendin")
    assert generate(default_pair, "Why is the sky blue?", method="blendin").text == first
