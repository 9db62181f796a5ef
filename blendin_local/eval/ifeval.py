"""IFEval scoring: does a response follow each of its prompt's verifiable instructions?

Offline and deterministic. Each of the 25 instruction types is a small pure check that
follows the published IFEval definitions (Zhou et al., 2023) and judges as Google's reference
evaluator (google-research/instruction_following_eval) does: where the two could part, the
reference's rule is the one kept, and it is stated beside the check. scripts/ifeval_agreement.py
measures the agreement on the GPT-4 responses the reference ships (docs/results/ifeval_harness.md).
Language identification uses `langdetect`, imported only when a language check runs.

"strict" checks the response as given. "loose" also accepts the response with its first
and/or last line removed and/or with every `*` removed, so a chatty opening line, a
closing remark or markdown emphasis does not hide an instruction that was followed.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blendin_local.errors import BlendinError, install_hint


@dataclass(frozen=True)
class IFEvalItem:
    key: int
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict, ...]


_RELATIONS: dict[str, Callable[[int, int], bool]] = {"less than": operator.lt, "at least": operator.ge}

# A word is a run of letters or digits, kept whole across an inner apostrophe, hyphen,
# period or comma, so "don't", "well-known", "U.S", "3.14" and "1,000" each count once.
_WORD = re.compile(r"[^\W_]+(?:['’.,\-][^\W_]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


# The reference counts a response's words as its runs of word characters, so "don't",
# "well-known" and "3.14" are two words each.
_WORD_RUN = re.compile(r"\w+")


def _occurrences(text: str, keyword: str) -> int:
    """How often `keyword` occurs anywhere in `text`, ignoring case, as the reference counts
    keywords: inside longer words too, so "war" counts in "wars" and "software"."""
    return len(re.findall(re.escape(keyword), text, flags=re.IGNORECASE))


def _word_count(text: str, word: str) -> int:
    """How often `word` occurs as a whole word, ignoring case."""
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE))


# --- sentences --------------------------------------------------------------------------

# A blank line, or a line that opens a list item or a heading, always starts a new sentence.
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*+•][ \t]|\d+[.)][ \t]|#))")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|#+)[ \t]+")
# Terminal punctuation, then any closing quotes, brackets or markdown emphasis, then a space.
_TERMINATOR = re.compile(r"(\.{2,}|…|[.!?]+)([\"'”’)\]*_]*)(?=\s|$)")
_OPENERS = "\"'“‘([*_"
_QUOTES = "\"'”’"
# Abbreviations that precede a name or a number, so their period never ends a sentence.
_NEVER_FINAL = frozenset("mr mrs ms dr prof st gen capt col lt sgt rev hon mt vs e.g i.e cf approx fig dept".split())
# Abbreviations that also end sentences: their period does so only before a capital.
_OFTEN_FINAL = frozenset("etc jr sr inc ltd co corp al no".split())
_DOTTED = re.compile(r"[^\W_]+(?:\.[^\W_]+)+")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, by rule: abbreviations, initials, decimals and ellipses inside
    a sentence do not end it; a quoted "!" or "?" followed by a lowercase word does not either."""
    sentences = []
    for block in _BLOCK_BREAK.split(text):
        block = _LIST_MARKER.sub("", block)
        start = 0
        for match in _TERMINATOR.finditer(block):
            if _ends_sentence(block, match):
                sentences.append(block[start : match.end()].strip())
                start = match.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if re.search(r"\w", s)]


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    terminator, closers = match.group(1), match.group(2)
    following = text[match.end() :].lstrip().lstrip(_OPENERS)
    if not following:
        return True
    next_is_capital = following[0].isupper()
    if terminator == "…" or terminator.startswith(".."):
        return next_is_capital
    if "?" in terminator or "!" in terminator:
        quoted = any(c in _QUOTES for c in closers)
        return not (quoted and following[0].islower())
    last_word = re.search(r"\S*$", text[: match.start()])  # matches everywhere, if only emptily
    before = (last_word.group() if last_word else "").lstrip(_OPENERS).lower()
    if before in _NEVER_FINAL or (len(before) == 1 and before.isalpha()):
        return False
    if before in _OFTEN_FINAL or _DOTTED.fullmatch(before):
        return next_is_capital
    return True


# --- language ---------------------------------------------------------------------------


@functools.cache
def _language_detector() -> tuple[Callable[[str], str], type[Exception]]:
    try:
        import langdetect
    except ImportError as error:
        raise BlendinError(f"IFEval language checks need the 'langdetect' package: {install_hint('eval')}") from error
    # langdetect samples n-grams at random; a fixed seed makes every verdict reproducible.
    langdetect.DetectorFactory.seed = 0
    return langdetect.detect, langdetect.LangDetectException


def _detected_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when the text has no letters to judge."""
    detect, undetectable = _language_detector()
    try:
        # The text as given, capitals and all, as the reference judges it (all-caps English
        # can read as another language; the reference then says the instruction was missed).
        return detect(text).split("-")[0]
    except undetectable:
        return None


def _is_english(text: str) -> bool:
    return _detected_language(text) == "en"


# --- the 25 checks ----------------------------------------------------------------------


def _has_keywords(response: str, *, keywords: list[str]) -> bool:
    # Anywhere, as in the reference: "riddles" includes the keyword "riddle".
    return all(_occurrences(response, keyword) > 0 for keyword in keywords)


def _keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    return _RELATIONS[relation](_occurrences(response, keyword.strip()), frequency)


def _avoids_words(response: str, *, forbidden_words: list[str]) -> bool:
    return all(_word_count(response, word) == 0 for word in forbidden_words)


def _letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _RELATIONS[let_relation](response.lower().count(letter.lower()), let_frequency)


def _in_language(response: str, *, language: str) -> bool:
    return _detected_language(response) == language.lower().split("-")[0]


def _sentence_count(response: str, *, num_sentences: int, relation: str) -> bool:
    return _RELATIONS[relation](len(split_sentences(response)), num_sentences)


# Any "***" divides paragraphs, also at the end of a line of text ("the end. ***") and in
# "***bold italic***", as in the reference.
_DIVIDER = re.compile(re.escape("***"))
_RESPONSE_SEPARATOR = re.compile(re.escape("******"))


def _separated_parts(text: str, separator: re.Pattern[str]) -> list[str] | None:
    """The stripped pieces between separators; None when a separator pair encloses nothing.

    A separator before the first piece or after the last one only frames the text."""
    parts = [part.strip() for part in separator.split(text)]
    start = 0 if parts[0] else 1
    end = len(parts) if parts[-1] else len(parts) - 1
    body = parts[start:end]
    return body if all(body) else None


def _paragraph_count(response: str, *, num_paragraphs: int) -> bool:
    paragraphs = _separated_parts(response, _DIVIDER)
    return paragraphs is not None and len(paragraphs) == num_paragraphs


def _word_total(response: str, *, num_words: int, relation: str) -> bool:
    return _RELATIONS[relation](len(_WORD_RUN.findall(response)), num_words)


# What ends the first word of a paragraph, as in the reference: "It's" starts with "it", while
# "Summary:" and "**Summary**" are not the word "summary".
_FIRST_WORD_END = re.compile(r"[.,?!'\"]")


def _nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    # Paragraphs are the pieces between "\n\n"; as in the reference, only non-blank pieces are
    # counted, but a blank piece (from a run of four newlines) still takes its place in the
    # numbering, so the nth piece must be the one that starts with the word.
    pieces = response.split("\n\n")
    if sum(1 for piece in pieces if piece.strip()) != num_paragraphs or not 1 <= nth_paragraph <= num_paragraphs:
        return False
    words = pieces[nth_paragraph - 1].split()
    if not words:
        return False
    opening = _FIRST_WORD_END.split(words[0].lstrip("'\""), maxsplit=1)[0]
    return opening.lower() == first_word.lower()


_PLACEHOLDER = re.compile(r"\[[ \t]*[^\s\[\]][^\[\]\n]*\]")


def _placeholder_count(response: str, *, num_placeholders: int) -> bool:
    return len(_PLACEHOLDER.findall(response)) >= num_placeholders


def _has_postscript(response: str, *, postscript_marker: str) -> bool:
    # "P.S." matches "P. S." and "p.s." but not the tail of "P.P.S.".
    marker = r"\.\s?".join(re.escape(part) for part in postscript_marker.split("."))
    return re.search(rf"(?<![\w.]){marker}", response, flags=re.IGNORECASE) is not None


_BULLET = re.compile(r"^[ \t]*[*-][ \t]+\S", flags=re.MULTILINE)


def _bullet_count(response: str, *, num_bullets: int) -> bool:
    return len(_BULLET.findall(response)) == num_bullets


_CONSTRAINED_ANSWERS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _gives_constrained_answer(response: str) -> bool:
    return any(answer in response for answer in _CONSTRAINED_ANSWERS)


# Markdown emphasis: the text inside may not start or end with a space, so "* item" bullets
# and "a * b * c" arithmetic are not highlights.
_HIGHLIGHT = re.compile(r"\*\*(?!\s)[^\n*]+(?<!\s)\*\*|\*(?!\s)[^\n*]+(?<!\s)\*")


def _highlight_count(response: str, *, num_highlights: int) -> bool:
    return len(_HIGHLIGHT.findall(response)) >= num_highlights


def _section_count(response: str, *, section_spliter: str, num_sections: int) -> bool:
    headers = re.findall(rf"(?<!\w){re.escape(section_spliter)}[ \t]*\d+", response)
    return len(headers) >= num_sections


_CODE_FENCE = re.compile(r"^```[\w-]*|```$")


def _is_json(response: str) -> bool:
    try:
        json.loads(_CODE_FENCE.sub("", response.strip()))
    except ValueError:
        return False
    return True


_TITLE = re.compile(r"<<[ \t]*[^\s<>][^\n<>]*>>")


def _has_title(response: str) -> bool:
    return _TITLE.search(response) is not None


def _two_different_responses(response: str) -> bool:
    parts = _separated_parts(response, _RESPONSE_SEPARATOR)
    return parts is not None and len(parts) == 2 and parts[0] != parts[1]


def _repeats_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _ends_with(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"“”').lower().endswith(end_phrase.strip().lower())


def _capital_word_count(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    # As published, "I" and "A" are all-caps words too.
    capitals = sum(1 for word in _words(response) if word.isupper())
    return _RELATIONS[capital_relation](capitals, capital_frequency)


def _all_capitals_in_english(response: str) -> bool:
    return response.isupper() and _is_english(response)


def _all_lowercase_in_english(response: str) -> bool:
    return response.islower() and _is_english(response)


# Full-width, Arabic and ideographic commas are commas too.
_COMMAS = ",，،、"


def _has_no_comma(response: str) -> bool:
    return not any(comma in response for comma in _COMMAS)


def _is_quoted(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and (text[0], text[-1]) in {('"', '"'), ("“", "”")}


# --- instruction table and kwargs validation --------------------------------------------


@dataclass(frozen=True)
class _Param:
    accepts: Callable[[Any], bool]
    described: str


_COUNT = _Param(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer")
_TEXT = _Param(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
_CHARACTER = _Param(lambda v: isinstance(v, str) and len(v) == 1, "a single character")
_WORD_LIST = _Param(
    lambda v: isinstance(v, list) and all(isinstance(w, str) and w.strip() for w in v),
    "a list of non-empty strings",
)
_RELATION = _Param(lambda v: v in _RELATIONS, "one of " + " or ".join(map(repr, _RELATIONS)))


@dataclass(frozen=True)
class _Instruction:
    check: Callable[..., bool]
    params: Mapping[str, _Param]


_INSTRUCTIONS: dict[str, _Instruction] = {
    "keywords:existence": _Instruction(_has_keywords, {"keywords": _WORD_LIST}),
    "keywords:frequency": _Instruction(
        _keyword_frequency, {"keyword": _TEXT, "frequency": _COUNT, "relation": _RELATION}
    ),
    "keywords:forbidden_words": _Instruction(_avoids_words, {"forbidden_words": _WORD_LIST}),
    "keywords:letter_frequency": _Instruction(
        _letter_frequency, {"letter": _CHARACTER, "let_frequency": _COUNT, "let_relation": _RELATION}
    ),
    "language:response_language": _Instruction(_in_language, {"language": _TEXT}),
    "length_constraints:number_sentences": _Instruction(
        _sentence_count, {"num_sentences": _COUNT, "relation": _RELATION}
    ),
    "length_constraints:number_paragraphs": _Instruction(_paragraph_count, {"num_paragraphs": _COUNT}),
    "length_constraints:number_words": _Instruction(_word_total, {"num_words": _COUNT, "relation": _RELATION}),
    "length_constraints:nth_paragraph_first_word": _Instruction(
        _nth_paragraph_first_word, {"num_paragraphs": _COUNT, "nth_paragraph": _COUNT, "first_word": _TEXT}
    ),
    "detectable_content:number_placeholders": _Instruction(_placeholder_count, {"num_placeholders": _COUNT}),
    "detectable_content:postscript": _Instruction(_has_postscript, {"postscript_marker": _TEXT}),
    "detectable_format:number_bullet_lists": _Instruction(_bullet_count, {"num_bullets": _COUNT}),
    "detectable_format:constrained_response": _Instruction(_gives_constrained_answer, {}),
    "detectable_format:number_highlighted_sections": _Instruction(_highlight_count, {"num_highlights": _COUNT}),
    "detectable_format:multiple_sections": _Instruction(
        _section_count, {"section_spliter": _TEXT, "num_sections": _COUNT}
    ),
    "detectable_format:json_format": _Instruction(_is_json, {}),
    "detectable_format:title": _Instruction(_has_title, {}),
    "combination:two_responses": _Instruction(_two_different_responses, {}),
    "combination:repeat_prompt": _Instruction(_repeats_prompt, {"prompt_to_repeat": _TEXT}),
    "startend:end_checker": _Instruction(_ends_with, {"end_phrase": _TEXT}),
    "change_case:capital_word_frequency": _Instruction(
        _capital_word_count, {"capital_frequency": _COUNT, "capital_relation": _RELATION}
    ),
    "change_case:english_capital": _Instruction(_all_capitals_in_english, {}),
    "change_case:english_lowercase": _Instruction(_all_lowercase_in_english, {}),
    "punctuation:no_comma": _Instruction(_has_no_comma, {}),
    "startend:quotation": _Instruction(_is_quoted, {}),
}

INSTRUCTION_TYPES: tuple[str, ...] = tuple(_INSTRUCTIONS)


def _arguments(instruction_id: str, kwargs: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """The checked keyword arguments of one instruction; null values count as absent."""
    if instruction_id not in _INSTRUCTIONS:
        raise ValueError(f"unknown IFEval instruction {instruction_id!r}")
    params = _INSTRUCTIONS[instruction_id].params
    given = {name: value for name, value in kwargs.items() if value is not None}
    if instruction_id == "combination:repeat_prompt":
        # Without an explicit excerpt, the request to repeat is the whole prompt.
        given.setdefault("prompt_to_repeat", prompt)
    unexpected = sorted(set(given) - set(params))
    if unexpected:
        raise ValueError(f"{instruction_id}: unexpected kwarg(s) {', '.join(unexpected)}")
    missing = sorted(set(params) - set(given))
    if missing:
        raise ValueError(f"{instruction_id}: missing kwarg(s) {', '.join(missing)}")
    for name, param in params.items():
        if not param.accepts(given[name]):
            raise ValueError(f"{instruction_id}: kwarg {name!r} must be {param.described}, got {given[name]!r}")
    return given


def check_instruction(instruction_id: str, kwargs: dict, response: str, prompt: str) -> bool:
    """Strict check: does `response`, exactly as given, follow this instruction?

    A blank response follows no instruction. Raises ValueError on an unknown instruction or
    bad kwargs."""
    arguments = _arguments(instruction_id, kwargs, prompt)
    return bool(response.strip()) and _INSTRUCTIONS[instruction_id].check(response, **arguments)


def loose_variants(response: str) -> tuple[str, ...]:
    """The response, without its first line, its last line, or both; each also without `*`."""
    lines = response.split("\n")
    trimmed = (response, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1]))
    return tuple(dict.fromkeys((*trimmed, *(text.replace("*", "") for text in trimmed))))


def score_response(item: IFEvalItem, response: str) -> dict:
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(item.instruction_ids, item.kwargs, strict=True):
        strict.append(check_instruction(instruction_id, kwargs, response, item.prompt))
        loose.append(any(check_instruction(instruction_id, kwargs, v, item.prompt) for v in variants))
    return {"strict": strict, "loose": loose, "prompt_strict": all(strict), "prompt_loose": all(loose)}


def aggregate(scores: list[dict]) -> dict:
    """Prompt-level accuracy (every instruction followed) and instruction-level accuracy."""
    strict = [passed for score in scores for passed in score["strict"]]
    loose = [passed for score in scores for passed in score["loose"]]
    if not strict:
        raise ValueError("aggregate() needs at least one scored instruction")
    return {
        "prompt_strict": sum(s["prompt_strict"] for s in scores) / len(scores),
        "prompt_loose": sum(s["prompt_loose"] for s in scores) / len(scores),
        "instruction_strict": sum(strict) / len(strict),
        "instruction_loose": sum(loose) / len(loose),
        "n_prompts": len(scores),
        "n_instructions": len(strict),
    }


def parse_item(record: dict) -> IFEvalItem:
    """One line of IFEval's input_data.jsonl, checked; raises ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"IFEval record must be a JSON object, got {type(record).__name__}")
    where = f"IFEval record {record.get('key', '(no key)')!r}"
    missing = [field for field in ("key", "prompt", "instruction_id_list", "kwargs") if field not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    key, prompt, ids, kwargs = record["key"], record["prompt"], record["instruction_id_list"], record["kwargs"]
    if not isinstance(key, int) or isinstance(key, bool):
        raise ValueError(f"{where}: 'key' must be an integer")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: 'prompt' must be a non-empty string")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{where}: 'instruction_id_list' must be a non-empty list of strings")
    if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError(f"{where}: 'kwargs' must be a list of objects")
    if len(kwargs) != len(ids):
        raise ValueError(f"{where}: {len(ids)} instruction(s) but {len(kwargs)} kwargs object(s)")
    cleaned = tuple({name: value for name, value in k.items() if value is not None} for k in kwargs)
    for instruction_id, arguments in zip(ids, cleaned, strict=True):
        try:
            _arguments(instruction_id, arguments, prompt)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return IFEvalItem(key=key, prompt=prompt, instruction_ids=tuple(ids), kwargs=cleaned)
