"""The comma-separated option values of the commands (docs/semantics.md §9), each token
read exactly by `refbnn.formats.values`."""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable

from ..formats.values import brief_token, parse_ber, parse_rational


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
            raise ValueError(f"--b: {brief_token(token)} is negative; b must be >= 0")
        out.append((token, b))
    return out


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
            raise ValueError(f"{option}: {brief_token(token)} is not {what}")
        out.append(int(token))
    return out
