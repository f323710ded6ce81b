"""Property-based checking of BNN metric implementations against refbnn
(docs/semantics.md §12): Hypothesis strategies for contract-valid models aimed at the
edges, and `assert_claims`, which raises verify's report when claims differ.

    from hypothesis import given
    from refbnn.testing import assert_claims, cases

    @given(cases(features={"fc", "conv", "padding", "polarity"}))
    def test_mine(case):
        assert_claims(case.model, case.x, case.y, my_metrics(case), request=case.request)

Needs Hypothesis: `pip install 'refbnn[fuzz]'`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

try:
    import hypothesis  # noqa: F401
except ImportError as e:     # pragma: no cover - the message is the point
    raise ImportError("refbnn.testing needs Hypothesis: pip install 'refbnn[fuzz]'") from e

from ..formats.claimsfile import jsonable
from ..formats.datafile import Dataset
from ..semantics.model import Model
from ..oracle.report import claims_report
from .build import FEATURES, Case
from .compare import check_request, judge
from .strategies import cases, datasets, models

__all__ = ["FEATURES", "Case", "assert_claims", "cases", "datasets", "models"]


def assert_claims(model: Model, x: np.ndarray, y: np.ndarray, claims: dict, request: Optional[dict] = None,
                  atol: float = 1e-9) -> None:
    """Raise AssertionError, with verify's report, unless refbnn agrees with `claims`.

    `claims` is in the layout `refbnn verify --claims` reads (Fractions, NumPy numbers and
    arrays are accepted). With a `request` (a case's), the claims it asks for must all be
    there and the others are not checked; without one, every claim given is checked.

    >>> from refbnn.demo.bars import example_data, example_model
    >>> from fractions import Fraction
    >>> model = example_model(); x, y = example_data(4)
    >>> assert_claims(model, x, y, {"inputs": 4})
    >>> assert_claims(model, x, y, {"inputs": 5})
    Traceback (most recent call last):
    ...
    AssertionError: refbnn disagrees with these claims
    claims: 1 checked, 0 pass, 1 fail
    ...
    """
    doc: Any = jsonable(claims)
    data = Dataset(np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64))
    if request is not None:
        finding, asked = judge(model, data.x, data.y, check_request(request), doc, "claims", atol)
        if finding is None:
            return
        if finding.kind != "wrong":
            raise AssertionError(f"refbnn cannot check these claims: {finding.line()}")
        doc = asked
    report = claims_report(model, data, doc, "claims", atol)
    if report.failed:
        raise AssertionError("refbnn disagrees with these claims\n" + "\n".join(report.lines))
