"""The benchmark files as `EvalItem`s, with the paper's system prompts and question texts.

The files are read from a data directory the user names (`--data-dir` or $BLENDIN_DATA_DIR),
laid out as in the shared data folder: gsm8k/test.jsonl, mmlu/mmlu_test.jsonl,
arc/ARC-{Challenge,Easy}-Test.jsonl, truthfulqa/mc_task.json, xstest/xstest_prompts.csv,
ifeval/input_data.jsonl, just_eval/just_eval_instruct.jsonl (see SOURCES).

Prompts: the paper's system prompts; question texts as in the Nudging reference code
(fywalter/nudging, which has these system prompts verbatim). The model prompt around them, e.g. the
base's `{system}\\nQuestion: {question}\\n`, is built elsewhere; note that the reference
code labels JustEval prompts "Instruction: " instead of "Question: ".
- system: REASONING_SYSTEM ("Answer the question by walking through the reasoning steps.")
  for gsm8k, mmlu, arc_challenge, arc_easy; ASSISTANT_SYSTEM ("You are a helpful
  assistant.") for truthfulqa, xstest, ifeval, justeval.
- gsm8k, xstest, ifeval, justeval: the question or instruction as in the file, stripped.
- multiple choice: CHOICE_QUESTION ("{question}\\n{options}"), one OPTION ("{letter}. {text}")
  per line, letters A, B, C, ... in display order; no answer-format instruction is added (the
  paper's judge read free text, and `scoring.extract_choice` does the same).
- mmlu: prefixed by MMLU_SUBJECT ("Subject: {subject}\\n"), underscores of the subject as
  spaces ("high school biology"); the reference code printed the raw "high_school_biology".
- arc: labels "1"-"5" are shown as letters "A"-"E" (same position; the reference code showed
  them as given), so every multiple-choice gold is a letter; the upstream labels are kept in
  meta["labels"]. Items keep their 3 to 5 options.
- truthfulqa: MC1 from mc_task.json (the CSV is not used). The first key of mc1_targets is
  the correct answer; the options are shuffled by random.Random(item index), and gold is the
  letter where the correct answer lands.

Ids are "{dataset}-{index}", the 0-based position of the record in its file. Gold: gsm8k
the number after "####" (commas removed), multiple choice the letter, xstest "safe"/"unsafe",
justeval "regular"/"safety", ifeval None (the raw record is meta["record"]).

`sample_items` draws a seeded subset: random.Random(seed).sample over item positions, with
the reference code's seed 609, returned in file order. (The reference drew with NumPy,
np.random.seed(609) then np.random.choice(n, k, replace=False), from Hugging Face copies of
the sets, so its subsets are not these: only the seed is shared.)
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from blendin_local.errors import BlendinError
from blendin_local.eval.numbers import gold_number
from blendin_local.user_paths import user_path

DATA_DIR_ENV = "BLENDIN_DATA_DIR"
DEFAULT_SEED = 609

REASONING_SYSTEM = "Answer the question by walking through the reasoning steps."
ASSISTANT_SYSTEM = "You are a helpful assistant."
OPTION = "{letter}. {text}"
CHOICE_QUESTION = "{question}\n{options}"
MMLU_SUBJECT = "Subject: {subject}\n"


@dataclass(frozen=True)
class EvalItem:
    dataset: str
    id: str
    question: str
    system: str
    gold: str | None
    choices: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    path: str
    upstream: str
    build: Callable[[str, int, dict, str], EvalItem]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory: the argument, else $BLENDIN_DATA_DIR; it must exist."""
    origin = "--data-dir"
    if data_dir is None:
        data_dir, origin = os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}"
    if not data_dir:
        raise BlendinError(
            f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV}=DIR "
            "(the folder holding gsm8k/, mmlu/, arc/, truthfulqa/, xstest/, ifeval/, just_eval/)"
        )
    path = user_path(data_dir)
    if not path.is_dir():
        raise BlendinError(f"data directory {path} (from {origin}) does not exist or is not a directory")
    return path


def load_dataset(name: str, data_dir: Path) -> list[EvalItem]:
    """Every item of dataset `name`, in file order."""
    source = SOURCES.get(name)
    if source is None:
        raise BlendinError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    path = Path(data_dir) / source.path
    if not path.exists():
        raise BlendinError(f"{path}: no such file; expected {source.upstream}")
    items = [
        source.build(name, index, _as_object(record, where), where)
        for index, (where, record) in enumerate(_records(path))
    ]
    if not items:
        raise BlendinError(f"{path}: no items; expected {source.upstream}")
    return items


def sample_items(items: list[EvalItem], limit: int | None, seed: int = DEFAULT_SEED) -> list[EvalItem]:
    """`limit` items drawn with `seed`, in their original order; all of them when limit is None or large."""
    if limit is not None and limit < 1:
        raise BlendinError("--limit must be at least 1")
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


# Reading: each record comes with "<path>, line <n>" so that every complaint names its place.


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BlendinError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BlendinError(f"{path}, line {line}: not UTF-8 text ({e.reason})") from None


def _records(path: Path) -> Iterator[tuple[str, object]]:
    text = _read_text(path)
    readers = {".jsonl": _jsonl_records, ".json": _json_array_records, ".csv": _csv_records}
    for line, record in readers[path.suffix](path, text):
        yield f"{path}, line {line}", record


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, object]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for line, content in enumerate(text.split("\n"), 1):
        if content.strip():
            try:
                yield line, json.loads(content)
            except json.JSONDecodeError as e:
                raise BlendinError(f"{path}, line {line}: invalid JSON ({e.msg}, column {e.colno})") from None


_WHITESPACE = re.compile(r"\s*")


def _json_array_records(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        space = _WHITESPACE.match(text, pos)  # \s* matches everywhere, if only emptily
        return space.end() if space else pos

    def invalid(pos: int, what: str) -> BlendinError:
        return BlendinError(f"{path}, line {text.count(chr(10), 0, pos) + 1}: invalid JSON ({what})")

    pos = skip(0)
    if not text.startswith("[", pos):
        raise invalid(pos, "expected a JSON array of items")
    pos = skip(pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise invalid(e.pos, e.msg) from None
        yield text.count("\n", 0, pos) + 1, record
        pos = skip(end)
        if text.startswith("]", pos):
            if text[skip(pos + 1) :]:
                raise invalid(skip(pos + 1), "extra data after the array")
            return
        if not text.startswith(",", pos):
            raise invalid(pos, "expected ',' or ']' after an item")
        pos = skip(pos + 1)


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        raise BlendinError(f"{path}, line {reader.line_num}: invalid CSV ({e})") from None


# Building items: every value the item needs is checked, with its key, before it is used.


def _as_object(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise BlendinError(f"{where}: expected an object with named fields, got {type(record).__name__}")
    return record


def _field(record: dict, key: str, kind: type, where: str):
    if key not in record:
        raise BlendinError(f"{where}: missing key {key!r}")
    value = record[key]
    if value is None:
        raise BlendinError(f"{where}: no value for {key!r}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BlendinError(f"{where}: {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _one_of(record: dict, key: str, allowed: tuple[str, ...], where: str) -> str:
    value = _field(record, key, str, where)
    if value not in allowed:
        raise BlendinError(f"{where}: {key!r} is {value!r}, expected one of {', '.join(allowed)}")
    return value


def _texts(values: list, key: str, where: str) -> list[str]:
    if not 2 <= len(values) <= len(string.ascii_uppercase):
        raise BlendinError(f"{where}: {key!r} has {len(values)} options, expected 2 to 26")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise BlendinError(f"{where}: {key}[{i}] must be str, got {type(value).__name__}")
    return values


def _choice_item(name: str, index: int, question: str, choices: list[str], gold: int, meta: dict) -> EvalItem:
    options = "\n".join(
        OPTION.format(letter=letter, text=text) for letter, text in zip(string.ascii_uppercase, choices, strict=False)
    )
    return EvalItem(
        dataset=name,
        id=f"{name}-{index}",
        question=CHOICE_QUESTION.format(question=question.strip(), options=options),
        system=REASONING_SYSTEM if name in REASONING_DATASETS else ASSISTANT_SYSTEM,
        gold=string.ascii_uppercase[gold],
        choices=tuple(choices),
        meta=meta,
    )


def _gsm8k_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    question = _field(record, "question", str, where)
    gold = gold_number(_field(record, "answer", str, where))
    if gold is None:
        raise BlendinError(f"{where}: 'answer' does not end in '#### <number>'")
    return EvalItem(name, f"{name}-{index}", question.strip(), REASONING_SYSTEM, gold)


def _mmlu_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    subject = _field(record, "subject", str, where)
    question = _field(record, "question", str, where)
    choices = _texts(_field(record, "choices", list, where), "choices", where)
    answer = _field(record, "answer", int, where)
    if not 0 <= answer < len(choices):
        raise BlendinError(f"{where}: 'answer' is {answer}, expected 0 to {len(choices) - 1}")
    header = MMLU_SUBJECT.format(subject=subject.replace("_", " "))
    return _choice_item(name, index, header + question.strip(), choices, answer, {"subject": subject})


def _arc_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    question = _field(record, "question", dict, where)
    stem = _field(question, "stem", str, where)
    options = _field(question, "choices", list, where)
    for i, option in enumerate(options):
        if (
            not isinstance(option, dict)
            or not isinstance(option.get("text"), str)
            or not isinstance(option.get("label"), str)
        ):
            raise BlendinError(f"{where}: question.choices[{i}] must have string 'text' and 'label'")
    texts = _texts([option["text"] for option in options], "question.choices", where)
    labels = tuple(option["label"] for option in options)
    answer_key = _field(record, "answerKey", str, where)
    if answer_key not in labels:
        raise BlendinError(f"{where}: 'answerKey' is {answer_key!r}, not one of the labels {', '.join(labels)}")
    meta = {"upstream_id": record.get("id"), "labels": labels}
    return _choice_item(name, index, stem, texts, labels.index(answer_key), meta)


def _truthfulqa_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    question = _field(record, "question", str, where)
    targets = _field(record, "mc1_targets", dict, where)
    if list(targets.values())[:1] != [1]:
        raise BlendinError(f"{where}: 'mc1_targets' must start with its correct answer (value 1)")
    answers = _texts(list(targets), "mc1_targets", where)
    order = list(range(len(answers)))
    random.Random(index).shuffle(order)
    return _choice_item(name, index, question, [answers[i] for i in order], order.index(0), {})


def _xstest_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    prompt = _field(record, "prompt", str, where)
    label = _one_of(record, "label", ("safe", "unsafe"), where)
    meta = {
        "upstream_id": _field(record, "id", str, where),
        "type": _field(record, "type", str, where),
        "focus": record.get("focus"),
        "note": record.get("note"),
    }
    return EvalItem(name, f"{name}-{index}", prompt.strip(), ASSISTANT_SYSTEM, label, meta=meta)


def _ifeval_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    prompt = _field(record, "prompt", str, where)
    meta = {"key": _field(record, "key", int, where), "record": record}
    return EvalItem(name, f"{name}-{index}", prompt.strip(), ASSISTANT_SYSTEM, None, meta=meta)


def _justeval_item(name: str, index: int, record: dict, where: str) -> EvalItem:
    instruction = _field(record, "instruction", str, where)
    category = _one_of(record, "category", ("regular", "safety"), where)
    meta = {"upstream_id": record.get("id"), "source": record.get("dataset"), "source_id": record.get("source_id")}
    return EvalItem(name, f"{name}-{index}", instruction.strip(), ASSISTANT_SYSTEM, category, meta=meta)


SOURCES: dict[str, _Source] = {
    "gsm8k": _Source(
        "gsm8k/test.jsonl",
        "the GSM8K test split (openai/grade-school-math, grade_school_math/data/test.jsonl)",
        _gsm8k_item,
    ),
    "mmlu": _Source(
        "mmlu/mmlu_test.jsonl",
        "the MMLU test split as JSON lines (hendrycks/test, cais/mmlu 'all' test split re-exported)",
        _mmlu_item,
    ),
    "arc_challenge": _Source(
        "arc/ARC-Challenge-Test.jsonl",
        "the ARC-Challenge test split (AI2 ARC-V1-Feb2018, ARC-Challenge/ARC-Challenge-Test.jsonl)",
        _arc_item,
    ),
    "arc_easy": _Source(
        "arc/ARC-Easy-Test.jsonl",
        "the ARC-Easy test split (AI2 ARC-V1-Feb2018, ARC-Easy/ARC-Easy-Test.jsonl)",
        _arc_item,
    ),
    "truthfulqa": _Source(
        "truthfulqa/mc_task.json",
        "TruthfulQA's multiple-choice file (sylinrl/TruthfulQA, data/mc_task.json; TruthfulQA.csv is not used)",
        _truthfulqa_item,
    ),
    "xstest": _Source(
        "xstest/xstest_prompts.csv",
        "the XSTest prompts (paul-rottger/xstest, xstest_prompts.csv)",
        _xstest_item,
    ),
    "ifeval": _Source(
        "ifeval/input_data.jsonl",
        "the IFEval prompts (google-research, instruction_following_eval/data/input_data.jsonl)",
        _ifeval_item,
    ),
    "justeval": _Source(
        "just_eval/just_eval_instruct.jsonl",
        "the JustEval instructions (Re-Align/just-eval, just_eval_instruct.jsonl)",
        _justeval_item,
    ),
}
DATASETS: tuple[str, ...] = tuple(SOURCES)
REASONING_DATASETS: tuple[str, ...] = ("gsm8k", "mmlu", "arc_challenge", "arc_easy")
