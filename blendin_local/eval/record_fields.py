"""What `blendin eval report` reads of a record, checked before it reads it.

A run folder is a file like any other: hand-edited, merged from two machines, or written by
another version. A record whose fields the report uses are of the wrong kind (a list where a
score goes, a scoring without its instructions) is one error naming the file, the record and
the field, never a traceback halfway through the tables. Fields the report does not read are
left as they are, whatever they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from blendin_local.errors import BlendinError


class _Checked(BaseModel):
    # strict: the report computes on the record as written, so "1.0" is no score and true no count
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class JudgeVerdict(_Checked):
    score: float | None = None


class LoglikVerdict(_Checked):
    correct: bool


class ReportedRecord(_Checked):
    id: str
    method: str
    output: str
    score: float | None
    stop_reason: str
    n_tokens: int = Field(ge=0)
    intervention_rate: float = Field(ge=0.0, le=1.0)
    tokens_per_s: float | None = None
    scoring: dict[str, Any] = {}
    judge: JudgeVerdict | None = None
    loglik: LoglikVerdict | None = None
    alphas: list[float] = []
    base: str = ""
    guide: str = ""


_Count = Annotated[int, Strict(), Field(ge=0)]


class ProbeRecord(ReportedRecord):
    """A `+endprobe` row's record, as eval/ending_sweep.py cuts it at a threshold."""

    # [tokens, characters, probability]: JSON has no tuples, so the triple is read laxly and its
    # parts strictly
    end_checks: list[Annotated[tuple[_Count, _Count, Annotated[float, Strict()]], Strict(False)]] = []
    intervened: list[int] = []
    guide_ranks: list[int] = []
    base_top_p: list[float | None] = []  # None where the guide chose a token the base does not have


class IFEvalScoring(_Checked):
    strict: list[bool] = Field(min_length=1)
    loose: list[bool] = Field(min_length=1)
    prompt_strict: bool
    prompt_loose: bool


class XSTestScoring(_Checked):
    label: str
    refused: bool


SCORINGS: dict[str, type[_Checked]] = {"ifeval": IFEvalScoring, "xstest": XSTestScoring}


def check_records(dataset: str, path: Path, records: list[dict], kind: type[ReportedRecord] = ReportedRecord) -> None:
    """Raise one BlendinError for the first record of `path` (a method's file) the report (or,
    with `kind` ProbeRecord, the ending sweep) cannot read: which record, which field, and what
    is wrong with it."""
    scoring = SCORINGS.get(dataset)
    for number, record in enumerate(records, 1):
        where = f"{path}, record {number} ({shown(record.get('id'))})"
        try:
            checked = kind.model_validate(record)
        except ValidationError as e:
            raise _unreadable(where, e, "") from None
        if scoring is not None:
            try:
                scoring.model_validate(checked.scoring)
            except ValidationError as e:
                raise _unreadable(where, e, "scoring.") from None


def _unreadable(where: str, error: ValidationError, prefix: str) -> BlendinError:
    first = error.errors()[0]
    field = prefix + ".".join(str(part) for part in first["loc"])
    return BlendinError(
        f"{where}: {field.rstrip('.') or 'record'}: {first['msg']} (got {shown(first.get('input'))}); not as blendin eval writes it"
    )


def shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
