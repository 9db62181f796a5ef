"""Speculative BlendIn on the real default pair (greedy, 64 tokens, the invariant prompts): the
text is sequential BlendIn's, and the method's invariants hold with --speculative 4.

llama.cpp's CPU kernels round a row evaluated inside a batch differently from the same row
evaluated alone (docs/design.md), so speculative and sequential texts may part at a near-tie: two
tokens nearly tie in the distribution sequential decoding chose from, or the base's top-1
probability nearly equals gamma, so that the rounding decides whether the guide is asked. Each
disagreement is measured (the smaller of the two margins) and must be such a near-tie.
"""

import pytest
from alpha_one import blend_and_guide_texts
from paper import PAPERS_BLENDIN
from prompts import INVARIANT_PROMPTS

from blendin_local.engine.generation import Generation, GenerationSettings
from blendin_local.engine.prompts import Message
from blendin_local.engine.speculation import SpeculationStats

pytestmark = pytest.mark.models

N = 64
K = 4
NEAR_TIE = 0.05  # the largest margin, in probability, that a batch's rounding is allowed to flip
GAMMA = GenerationSettings().gamma


def generate(pair, prompt, **settings):
    return pair.generate(prompt, GenerationSettings(max_tokens=settings.pop("max_tokens", N), **settings))


def decision_gaps(pair, prompt, **settings):
    """A sequential run, with the gap at each step between the chosen token and every other one:
    {step: distribution} so that any two tokens can be compared afterwards."""
    generation = Generation(pair, [Message("user", prompt)], GenerationSettings(max_tokens=N, **settings))
    distributions = []
    decide = generation.ctx.base_decision

    def recording(next_token):
        distributions.append(next_token.probs.copy())
        return decide(next_token)

    generation.ctx.base_decision = recording
    return generation.run(), distributions


def test_speculative_blendin_writes_sequential_blendins_text(default_pair):
    agree, gaps, accepted, drafted = 0, [], 0, 0
    for prompt in INVARIANT_PROMPTS:
        sequential = generate(default_pair, prompt)
        speculative = generate(default_pair, prompt, speculative=K)
        stats = SpeculationStats.of(speculative.speculation)
        accepted, drafted = accepted + stats.accepted, drafted + stats.drafted
        if speculative.text == sequential.text:
            agree += 1
            continue
        step = next(
            i for i, (a, b) in enumerate(zip(sequential.trace, speculative.trace, strict=False)) if a.piece != b.piece
        )
        _, distributions = decision_gaps(default_pair, prompt)
        p = distributions[step]
        pieces = default_pair.base.pieces
        chosen = {pieces[t].decode("utf-8", "backslashreplace"): t for t in range(len(pieces)) if p[t] > 0.0}
        a, b = chosen.get(sequential.trace[step].piece), chosen.get(speculative.trace[step].piece)
        tie = None if a is None or b is None else float(p[a] - p[b])
        trigger = abs(sequential.trace[step].base_top_p - GAMMA)
        gaps.append((prompt[:40], step, tie if tie is not None and tie < trigger else trigger))
    print(
        f"\nspeculative {K} vs sequential BlendIn: {agree}/{len(INVARIANT_PROMPTS)} texts identical;"
        f" {accepted}/{drafted} drafted tokens accepted; disagreements (prompt, step, margin): {gaps}"
    )
    assert agree >= 0.95 * len(INVARIANT_PROMPTS), gaps
    assert all(abs(margin) <= NEAR_TIE for _, _, margin in gaps), gaps
    assert accepted > 0.3 * drafted  # the guide's drafts are worth checking on this pair


# The invariants with speculation, on a quarter (alpha 0, self-blend) or half (alpha 1) of the
# prompts: tests/engine/test_invariants.py runs every prompt without it, and the test above
# already shows speculation writing sequential BlendIn's text on all of them.
@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS[::4])
def test_alpha_zero_is_the_base_with_speculation(default_pair, prompt):
    base = generate(default_pair, prompt, method="base", speculative=K).text
    # The same drafts give the same batches, so the base's rows are the very same numbers.
    assert generate(default_pair, prompt, method="blendin", alpha=0.0, speculative=K, **PAPERS_BLENDIN).text == base
    always = generate(default_pair, prompt, method="blendin", alpha=0.0, gamma=1.01, speculative=K, **PAPERS_BLENDIN)
    assert always.text == base


def test_alpha_one_always_on_is_the_guide_with_speculation(default_pair):
    prompts = INVARIANT_PROMPTS[::2]
    runs = [(prompt, *blend_and_guide_texts(default_pair, prompt, N, speculative=K)) for prompt in prompts]
    misses = [run for run in runs if not run[3]]
    assert len(misses) <= 0.1 * len(prompts), misses


@pytest.mark.parametrize("prompt", INVARIANT_PROMPTS[::4])
def test_smollm_blended_with_itself_is_itself_with_speculation(smollm_self_pair, prompt):
    styles = dict(base_prompt="chat", guide_prompt="chat")
    guide = generate(smollm_self_pair, prompt, method="guide", **styles).text
    blended = generate(smollm_self_pair, prompt, method="blendin", speculative=K, **styles, **PAPERS_BLENDIN)
    assert blended.text == guide
    # A model drafting for itself: nearly every draft is accepted (a batch's rounding may flip a
    # near-tie of the base's rows, which the blend with the guide's own row then decides).
    assert SpeculationStats.of(blended.speculation).acceptance >= 0.9


def test_sampling_with_speculation_draws_the_same_text(default_pair):
    prompt = INVARIANT_PROMPTS[0]
    sampled = dict(temperature=0.8, seed=11)
    assert (
        generate(default_pair, prompt, speculative=K, **sampled).text == generate(default_pair, prompt, **sampled).text
    )
