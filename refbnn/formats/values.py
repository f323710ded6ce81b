"""Exact numbers in JSON, and the comma-separated option values (docs/semantics.md §9).

An exact quantity is written as `{"exact": "p/q", "value": float}`: the string is
the result, the float only for reading. Option lists are parsed here once, for
every command and for claims files that hold the same values.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Iterable


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
        raise ValueError(f"{field}: {_brief(token)} is not a rational number (write 2, 0.5, 1e-3 or 1/2)")
    try:
        return Fraction(token)
    except ZeroDivisionError:
        raise ValueError(f"{field}: {_brief(token)} is not a rational number (it divides by zero)") from None


def _brief(token: str) -> str:
    return repr(token) if len(token) <= 40 else repr(token[:37] + "...")


def _tokens(text: str, option: str) -> list[str]:
    tokens = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in tokens):
        raise ValueError(f"{option}: expected a comma-separated list, got {text!r}")
    return tokens


def parse_bs(text: str) -> list[tuple[str, Fraction]]:
    """`--b 2,0.5,1/2` -> [("2", 2), ("0.5", 1/2), ("1/2", 1/2)], each read exactly."""
    out = []
    for token in _tokens(text, "--b"):
        b = parse_rational(token, "--b")
        if b < 0:
            raise ValueError(f"--b: {_brief(token)} is negative; b must be >= 0")
        out.append((token, b))
    return out


def parse_ber(token: str, field: str = "--ber") -> float:
    """One bit error rate in [0, 1], written as a decimal or a fraction."""
    try:
        q = parse_rational(token, field)
    except ValueError:
        raise ValueError(f"{field}: {_brief(token)} is not a number") from None
    if not 0 <= q <= 1:
        raise ValueError(f"{field}: {_brief(token)} is outside [0, 1]")
    return float(q)


def parse_bers(text: str, option: str = "--ber") -> list[tuple[str, float]]:
    """`--ber 0,0.01,1/20` -> [("0", 0.0), ("0.01", 0.01), ("1/20", 0.05)]."""
    return [(token, parse_ber(token, option)) for token in _tokens(text, option)]


def parse_naturals(text: str, option: str, allowed: Iterable[int] | None = None,
                   what: str = "a non-negative integer") -> list[int]:
    """`--k 0,1,2` -> [0, 1, 2]: non-negative integers in ASCII digits (so no '²'), each
    from `allowed` if given; otherwise the error says the token is not `what`."""
    allowed = None if allowed is None else set(allowed)
    out = []
    for token in _tokens(text, option):
        if not (token.isascii() and token.isdigit() and len(token) <= 18) or \
                (allowed is not None and int(token) not in allowed):
            raise ValueError(f"{option}: {_brief(token)} is not {what}")
        out.append(int(token))
    return out
