#!/usr/bin/env python
"""How closely the project's IFEval checker agrees with Google's reference evaluator.

Scores a responses file (JSON lines with "prompt" and "response", such as the GPT-4 responses
that google-research/instruction_following_eval ships) with blendin_local.eval.ifeval, and
compares every instruction judgment with the reference's own per-prompt results for the same
responses (its eval_results_strict.jsonl and eval_results_loose.jsonl; of each line only
"prompt", "instruction_id_list" and "follow_instruction_list" are read). Files may be
xz-compressed (.xz). Nothing is downloaded: docs/results/ifeval_harness.md says where the
files come from and how the reference was run.

    python scripts/ifeval_agreement.py tests/eval/data/ifeval_gpt4_responses.jsonl.xz \\
        tests/eval/data/ifeval_gpt4_reference_strict.jsonl.xz \\
        tests/eval/data/ifeval_gpt4_reference_loose.jsonl.xz --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blendin_local.errors import BlendinError  # noqa: E402
from blendin_local.eval.datasets import resolve_data_dir  # noqa: E402
from blendin_local.eval.ifeval import IFEvalItem, parse_item, score_response  # noqa: E402

MODES = ("strict", "loose")


def read_jsonl(path: Path) -> Iterator[dict]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise SystemExit(f"{path}:{number}: not JSON: {error}") from None


def by_prompt(records: Iterator[dict], field_name: str, path: Path) -> dict[str, dict]:
    table = {}
    for record in records:
        if "prompt" not in record or field_name not in record:
            raise SystemExit(f"{path}: every line needs 'prompt' and {field_name!r}")
        table[record["prompt"]] = record
    return table


@dataclass
class ModeCounts:
    """One mode's instruction judgments (agreed, followed by each side) and prompts that follow
    all their instructions, by each side."""

    prompts: int = 0
    agreed: int = 0
    judged: int = 0
    ours_followed: int = 0
    reference_followed: int = 0
    ours_prompts_followed: int = 0
    reference_prompts_followed: int = 0
    disagreements: Counter[str] = field(default_factory=Counter)
    judged_by_type: Counter[str] = field(default_factory=Counter)
    differing: list[tuple[int, str, bool, bool]] = field(default_factory=list)  # key, instruction, ours, theirs


def compare(
    items: list[IFEvalItem], responses: dict[str, str], reference: dict[str, dict[str, dict]]
) -> dict[str, ModeCounts]:
    """Our judgments against the reference's, per mode; every item needs a response and a
    reference result with the same instruction list."""
    modes = {mode: ModeCounts() for mode in MODES}
    for item in items:
        if item.prompt not in responses:
            raise SystemExit(f"no response for IFEval key {item.key}")
        ours = score_response(item, responses[item.prompt])
        for mode, counts in modes.items():
            theirs = reference[mode].get(item.prompt)
            if theirs is None:
                raise SystemExit(f"no {mode} reference result for IFEval key {item.key}")
            if tuple(theirs["instruction_id_list"]) != item.instruction_ids:
                raise SystemExit(f"IFEval key {item.key}: the {mode} reference result lists other instructions")
            their_judgments = theirs["follow_instruction_list"]
            for instruction_id, our, their in zip(item.instruction_ids, ours[mode], their_judgments, strict=True):
                counts.judged += 1
                counts.judged_by_type[instruction_id] += 1
                counts.ours_followed += our
                counts.reference_followed += their
                if our == their:
                    counts.agreed += 1
                else:
                    counts.disagreements[instruction_id] += 1
                    counts.differing.append((item.key, instruction_id, our, their))
            counts.prompts += 1
            counts.ours_prompts_followed += all(ours[mode])
            counts.reference_prompts_followed += all(their_judgments)
    return modes


def report(modes: dict[str, ModeCounts], show: int) -> str:
    lines = [
        f"{modes['strict'].prompts} prompts, {modes['strict'].judged} instructions",
        "",
        "| mode | judgments agreed | prompt-level ours | prompt-level reference"
        " | instruction-level ours | instruction-level reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, counts in modes.items():
        lines.append(
            f"| {mode} | {counts.agreed}/{counts.judged} ({counts.agreed / counts.judged:.1%})"
            f" | {counts.ours_prompts_followed / counts.prompts:.3f}"
            f" | {counts.reference_prompts_followed / counts.prompts:.3f}"
            f" | {counts.ours_followed / counts.judged:.3f} | {counts.reference_followed / counts.judged:.3f} |"
        )
    differing = sorted(set().union(*(counts.disagreements for counts in modes.values())))
    if differing:
        lines += ["", "Instruction types where they differ (judgments that differ / judgments):", ""]
        lines += ["| instruction | strict | loose |", "|---|---:|---:|"]
        for instruction_id in differing:
            cells = [f"{c.disagreements[instruction_id]}/{c.judged_by_type[instruction_id]}" for c in modes.values()]
            lines.append(f"| {instruction_id} | " + " | ".join(cells) + " |")
    for mode, counts in modes.items():
        for key, instruction_id, our, their in counts.differing[:show]:
            lines.append(f"{mode}: key {key} {instruction_id}: ours {our}, reference {their}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("responses", type=Path, help="JSON lines with prompt and response")
    ap.add_argument("reference_strict", type=Path, help="the reference's eval_results_strict.jsonl")
    ap.add_argument("reference_loose", type=Path, help="the reference's eval_results_loose.jsonl")
    ap.add_argument(
        "--data-dir", help="folder with ifeval/input_data.jsonl, the prompts' instructions [default: $BLENDIN_DATA_DIR]"
    )
    ap.add_argument("--show", type=int, default=0, metavar="N", help="also list the first N differing judgments")
    args = ap.parse_args(argv)
    try:
        input_data = resolve_data_dir(args.data_dir) / "ifeval" / "input_data.jsonl"
    except BlendinError as error:
        raise SystemExit(f"error: {error}") from None
    items = [parse_item(record) for record in read_jsonl(input_data)]
    responses = {p: r["response"] for p, r in by_prompt(read_jsonl(args.responses), "response", args.responses).items()}
    reference = {
        mode: by_prompt(read_jsonl(path), "follow_instruction_list", path)
        for mode, path in zip(MODES, (args.reference_strict, args.reference_loose), strict=True)
    }
    print(report(compare(items, responses, reference), args.show))
    return 0


if __name__ == "__main__":
    sys.exit(main())
