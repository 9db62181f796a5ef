"""Numbers in GSM8K text: the answer's last number and the gold after "####", as plain digits.

Shared by the dataset reader (the gold) and the scorer (the answer), so that both read a number
by one rule: commas as thousands separators ("1,234"), a "$" sign, a leading minus only where it
cannot be subtraction ("-5", but "16-3" is 3), decimals; a sentence period is not a decimal point.
"""

from __future__ import annotations

import re
from decimal import Decimal

# A leading minus only when it cannot be subtraction ("16-3"); commas only as thousands groups.
_NUMBER = re.compile(r"(?<![\w.])([-−])?\$?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")


def extract_last_number(text: str) -> str | None:
    """The last number in `text`, as plain digits with sign and decimals ("-1234.5"), or None."""
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    sign, digits, decimals = numbers[-1]
    return ("-" if sign else "") + digits.replace(",", "") + (decimals or "")


def gold_number(answer_field: str) -> str | None:
    """The GSM8K gold: the number after "####", commas removed; None when there is none."""
    _, sep, tail = answer_field.rpartition("####")
    match = _NUMBER.fullmatch(tail.strip()) if sep else None
    return extract_last_number(match.group()) if match else None


def same_number(a: str, b: str) -> bool:
    return Decimal(a) == Decimal(b)
