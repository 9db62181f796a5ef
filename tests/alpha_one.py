"""The alpha-1 invariant's comparison, shared by the sequential and speculative tests: BlendIn with
alpha 1 and an always-on trigger must write the guide's text.

On the default cross-tokenizer pair the blend writes a guide token the base lacks in two steps
("'" + "s"), so it gets twice the guide's step budget. Where the guide's text was cut off by its
budget, the blend is stopped as soon as it has as many characters: past that the comparison reads
nothing, and the doubled budget would double the work."""

from paper import PAPERS_BLENDIN

from blendin_local.engine.generation import GenerationSettings


def blend_and_guide_texts(pair, prompt: str, max_tokens: int, **extra) -> tuple[str, str, bool]:
    """(guide's text, blend's text, whether the blend reproduces the guide)."""
    guide = pair.generate(prompt, GenerationSettings(method="guide", max_tokens=max_tokens))
    settings = GenerationSettings(
        method="blendin", alpha=1.0, gamma=1.01, max_tokens=2 * max_tokens, **{**PAPERS_BLENDIN, **extra}
    )
    generation = pair.start(prompt, settings)
    cut_off = guide.stop_reason == "length"
    for _ in generation.steps():
        if cut_off and len(generation.stream.text) >= len(guide.text):
            break
    blend = generation.finish().result.text
    return guide.text, blend, blend.startswith(guide.text) if cut_off else blend == guide.text
