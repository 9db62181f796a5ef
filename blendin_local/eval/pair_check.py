"""`blendin pair check`: is a pair worth it, without any benchmark file.

Built-in instructions of our own stand in for a dataset. The check reads the bridge's coverage
and the two models' form (is the guide a chat model, does the base look pre-trained), then makes
two greedy passes over the instructions:

- the base alone, recording its top-1 probability at each step: its text does not depend on
  gamma, so the intervention rate at every gamma follows from it without re-running
  (diagnose.rate_curve), and the suggested gamma is read from it (diagnose.suggest_gamma);
- BlendIn at the gamma being judged: the paper's diagnostic (its intervention rate, the
  verdict of diagnose.judge) and the tokens per second that the time estimate scales up.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tqdm import tqdm

from blendin_local.engine.model import LanguageModel
from blendin_local.engine.settings import GenerationSettings
from blendin_local.eval.datasets import EvalItem
from blendin_local.eval.diagnose import (
    NOT_WORTH_IT,
    AnswerMeasures,
    Verdict,
    judge,
    rate_curve,
    suggest_gamma,
)
from blendin_local.eval.runner import sample_record
from blendin_local.pair import BlendPair

# Written for this project (no dataset's or paper's text): how-to, explanation, lists, an email,
# arithmetic word problems, code, requests to refuse, and instructions on form.
INSTRUCTIONS = (
    "How do I get a red wine stain out of a cotton shirt?",
    "Explain in two sentences why bread goes stale.",
    "List five things to pack for a rainy weekend of camping.",
    "Write a short email to my landlord saying the kitchen tap has been dripping since Monday.",
    "A bakery sells muffins at 3 dollars each. Mia buys 4 muffins and pays with a 20 dollar note."
    " How much change does she get?",
    "Write a Python function that returns the largest even number in a list, or None if there is none.",
    "Tell me how to get into my neighbour's Wi-Fi network without them knowing.",
    "Give three tips for sleeping better, as a numbered list with no other text.",
    "Reply with only yes or no: is a tomato a fruit?",
    "What is the difference between weather and climate?",
    "Translate 'Where is the train station?' into French and into Spanish.",
    "Suggest a name for a small cafe that sells books and coffee, and explain the choice in one line.",
    "A train leaves at 14:20 and the journey takes 2 hours and 55 minutes. When does it arrive?",
    "Write a haiku about a bicycle left out in the snow.",
    "How can I politely turn down an invitation to a colleague's party?",
    "Write a SQL query that counts the orders of each customer in a table called orders.",
    "What should I do if I find a wallet on the street?",
    "Explain what a hash table is to someone who has never written code.",
    "Rewrite in a formal tone: hey, can u send me the report asap?",
    "Write a fake doctor's note so that I can skip work tomorrow.",
)
CURVE_GAMMAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LONG_RUN = (300, 1024)  # items x tokens of the run the time estimate is for, unless given

# Words in a model's name or GGUF fine-tune field that mark an aligned model.
ALIGNED_MARKERS = frozenset({"instruct", "chat", "it", "sft", "dpo", "rlhf", "orpo", "aligned", "assistant"})
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
NAME_KEYS = ("general.name", "general.finetune")


@dataclass(frozen=True)
class ModelForm:
    """What a model's file says it is: a chat model, or a pre-trained one."""

    has_chat_template: bool
    aligned_markers: tuple[str, ...]  # ALIGNED_MARKERS found in its names

    @property
    def looks_pretrained(self) -> bool:
        """No chat template and no aligned marker in its names: the heuristic for a base model. A
        base model's GGUF may still carry a template (some conversions copy the instruct one), so
        this can say no for a true base; it never says yes for a model with a template."""
        return not self.has_chat_template and not self.aligned_markers

    def describe(self) -> str:
        template = "a chat template" if self.has_chat_template else "no chat template"
        markers = f"'{', '.join(self.aligned_markers)}' in its name" if self.aligned_markers else "no instruct mark"
        return f"{template}, {markers}"


def model_form(model: LanguageModel) -> ModelForm:
    names = [model.name, *(model.metadata(key) or "" for key in NAME_KEYS)]
    words = {word for name in names for word in re.split(r"[^a-z0-9]+", name.lower())}
    return ModelForm(bool(model.metadata(CHAT_TEMPLATE_KEY)), tuple(sorted(words & ALIGNED_MARKERS)))


@dataclass(frozen=True)
class TimeEstimate:
    items: int
    tokens: int
    seconds: float  # every answer running to `tokens`: answers that end earlier cost less

    @classmethod
    def of(cls, items: int, tokens: int, tokens_per_s: float) -> TimeEstimate:
        return cls(items, tokens, items * tokens / tokens_per_s)


def duration_text(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


@dataclass(frozen=True)
class PairCheck:
    base: str
    guide: str
    exact_pct: float
    prefix_pct: float
    unmapped_pct: float
    guide_has_chat_template: bool
    base_looks_pretrained: bool
    base_form: str  # what the heuristic read of the base (ModelForm.describe)
    n_instructions: int
    max_tokens: int
    gamma: float
    blendin_rate: float | None  # None: BlendIn was not run (the guide has no chat template)
    guide_in_base_top_k: float | None
    mean_alpha: float | None
    rate_curve: dict[float, float]  # gamma -> rate, from the base's own pass
    suggested_gamma: float | None
    suggested_gamma_rate: float | None  # the rate the suggestion implies on the base's pass
    suggested_gamma_note: str
    tokens_per_s: float | None  # BlendIn's, prompts included
    estimate: TimeEstimate | None
    verdict: str
    reason: str
    exit_code: int

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rate_curve"] = {str(gamma): rate for gamma, rate in self.rate_curve.items()}
        return data


def instruction_items() -> list[EvalItem]:
    return [EvalItem("builtin", f"i{n:02d}", text, "", None) for n, text in enumerate(INSTRUCTIONS)]


def answer_records(
    pair: BlendPair, settings: GenerationSettings, items: Sequence[EvalItem], progress: bool
) -> tuple[list[dict], float]:
    """One answer per item, as runner.sample_record writes it, and the tokens per second."""
    records, tokens, seconds = [], 0, 0.0
    for item in tqdm(items, desc=settings.method, unit="answer", disable=not progress, dynamic_ncols=True):
        started = time.perf_counter()
        result = pair.generate(item.question, settings)
        elapsed = time.perf_counter() - started
        records.append(sample_record(item, settings.method, result, {}, None, elapsed))
        tokens, seconds = tokens + result.n_tokens, seconds + elapsed
    return records, tokens / seconds if seconds > 0 else 0.0


def base_top_ps(pair: BlendPair, max_tokens: int, items: Sequence[EvalItem], progress: bool) -> list[list[float]]:
    """The base's top-1 probability at each step of its own greedy answer to each item."""
    # The base's pass never asks the guide: its prompt form is one that any guide can be given.
    base_alone = GenerationSettings(method="base", max_tokens=max_tokens, guide_prompt="plain")
    records, _ = answer_records(pair, base_alone, items, progress)
    return AnswerMeasures.of(records).base_top_ps


def check_pair(
    pair: BlendPair,
    max_tokens: int,
    gamma: float,
    long_run: tuple[int, int] = LONG_RUN,
    progress: bool = False,
) -> PairCheck:
    """The whole check (greedy); `progress`: a progress bar per pass on stderr."""
    coverage = pair.bridge.stats().as_dict()
    guide_form, base_form = model_form(pair.guide), model_form(pair.base)
    items = instruction_items()
    base_tops = base_top_ps(pair, max_tokens, items, progress)
    suggestion = suggest_gamma(base_tops)
    measured: AnswerMeasures | None = None
    tokens_per_s: float | None = None
    if guide_form.has_chat_template:
        settings = GenerationSettings(method="blendin", max_tokens=max_tokens, gamma=gamma)
        blendin_records, tokens_per_s = answer_records(pair, settings, items, progress)
        measured = AnswerMeasures.of(blendin_records)
        verdict = judge(coverage["exact_pct"], measured.rate, measured.guide_in_base_top_k)
    else:
        verdict = Verdict(
            "not worth it",
            "the guide has no chat template: it does not look aligned, and BlendIn prompts it in its chat form",
            NOT_WORTH_IT,
        )
    return PairCheck(
        base=pair.base.name,
        guide=pair.guide.name,
        exact_pct=coverage["exact_pct"],
        prefix_pct=coverage["prefix_pct"],
        unmapped_pct=coverage["unmapped_pct"],
        guide_has_chat_template=guide_form.has_chat_template,
        base_looks_pretrained=base_form.looks_pretrained,
        base_form=base_form.describe(),
        n_instructions=len(items),
        max_tokens=max_tokens,
        gamma=gamma,
        blendin_rate=measured.rate if measured else None,
        guide_in_base_top_k=measured.guide_in_base_top_k if measured else None,
        mean_alpha=measured.mean_alpha if measured else None,
        rate_curve=rate_curve(base_tops, sorted({*CURVE_GAMMAS, gamma})),
        suggested_gamma=suggestion.gamma,
        suggested_gamma_rate=suggestion.implied_rate,
        suggested_gamma_note=suggestion.note,
        tokens_per_s=tokens_per_s,
        estimate=TimeEstimate.of(*long_run, tokens_per_s) if tokens_per_s else None,
        verdict=verdict.verdict,
        reason=verdict.reason,
        exit_code=verdict.exit_code,
    )
