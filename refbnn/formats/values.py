"""Exact numbers in JSON, and the numbers files hold as text (docs/semantics.md §9).

An exact quantity is written as `{"exact": "p/q", "value": float}`: the string is
the result, the float only for reading. A rational (b) or a bit error rate written as
text is read here once, for claims files and for the command line's option lists
(`refbnn.cli.options`).
"""
from __future__ import annotations

import re
from fractions import Fraction


def exact(q: Fraction | int) -> dict:
    """A rational as JSON: always "p/q", even for integers ("1/1") (docs/semantics.md §9)."""
    q = Fraction(q)
    return {"exact": f"{q.numerator}/{q.denominator}", "value": float(q)}


# An integer, a decimal with an optional exponent of at most 3 digits, or p/q; Fraction()
# alone would accept "1e999999999" and then build a number of a billion digits.
_RATIONAL = re.compile(r"[+-]?([0-9]{1,400}(\.[0-9]{0,400})?|\.[0-9]{1,400})([eE][+-]?[0-9]{1,3})?"
                       r"|[+-]?[0-9]{1,400}/[0-9]{1,400}")


def parse_rational(token: str, field: str) -> Fraction:
    """A rational written as an integer, a decimal (exponent at most 3 digits) or p/q, exactly;
    a ValueError naming `field` otherwise."""
    token = token.strip()
    if not _RATIONAL.fullmatch(token):
        raise ValueError(f"{field}: {brief_token(token)} is not a rational number (write 2, 0.5, 1e-3 or 1/2)")
    try:
        return Fraction(token)
    except ZeroDivisionError:
        raise ValueError(f"{field}: {brief_token(token)} is not a rational number (it divides by zero)") from None


def brief_token(token: str) -> str:
    """A token for an error message: its repr, cut to 40 characters."""
    return repr(token) if len(token) <= 40 else repr(token[:37] + "...")


def parse_ber(token: str, field: str = "--ber") -> float:
    """One bit error rate in [0, 1], written as a decimal or a fraction."""
    try:
        q = parse_rational(token, field)
    except ValueError:
        raise ValueError(f"{field}: {brief_token(token)} is not a number") from None
    if not 0 <= q <= 1:
        raise ValueError(f"{field}: {brief_token(token)} is outside [0, 1]")
    return float(q)
