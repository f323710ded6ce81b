"""Our Table III beside the paper's (`paper_table3`), and the differences explained under
the conventions of verify's registry (docs/experiments.md, "Beside the paper").

A run is compared cell by cell when it is the paper's setting in kind: Table III's
experiment (or Fig. 2, which reports the same cells) on Fashion-MNIST, for a family the
paper has. Per cell: our mean (min, max) over the repetitions, the paper's, and whether
our mean lies inside the paper's min-max range.

Where cells fall outside, each metric is recomputed on the run's own models and test data
under the registry's conventions that change that metric and not the forward pass (T-bar:
no 1/Z in the first layer, no 1/2, no threshold in the first layer, layers unweighted,
pooled triples, T > b; VAR(Pi): ddof 1, Pi absolute, Pi over the flipped accuracy), and the
report says which, if any, brings every compared cell into the paper's range: a
diagnosis of the paper's table, stated as a finding, not a fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import repeat
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..formats.datafile import read_data
from ..formats.modelfile import read_model
from ..oracle.conventions import REGISTRY
from ..oracle.variants import VariantEngine
from .cells import PAPER_B, Config
from .paper_table3 import TABLE3, PaperValue, paper_value
from .workers import worker_pool

METRICS = {"var_importance": "VAR(Pi)", "T_bar": "T-bar"}
EXPLAIN = {
    "T_bar": ("first-layer-without-z", "margin-without-half", "first-layer-without-s", "layers-unweighted",
              "pooled-mean", "t-strict"),
    "var_importance": ("var-ddof1", "pi-absolute", "pi-over-flipped"),
}


def comparable(config: Config) -> bool:
    """Whether this run measures cells the paper's Table III reports."""
    return config.dataset == "fashion-mnist" and config.experiment in ("table3", "fig2") and \
        config.family in TABLE3


@dataclass(frozen=True)
class CellComparison:
    arch: str
    size: int
    ber: float
    metric: str
    ours: tuple[float, float, float]       # mean, min, max over the repetitions
    paper: PaperValue

    @property
    def inside(self) -> bool:
        return self.paper.contains(self.ours[0])


def _cell_values(records: list[dict], arch: str, ber: float, metric: str) -> list[float]:
    return [float(r[metric]["value"]) for r in records if r["arch"] == arch and r["train_ber"] == ber and metric in r]


def compare_cells(config: Config, records: list[dict]) -> list[CellComparison]:
    """Every cell of this run that the paper reports, with both sides."""
    out = []
    for arch, size in zip(config.archs(), config.sizes):
        for ber in config.train_bers:
            for metric in METRICS:
                vals = _cell_values(records, arch, ber, metric)
                paper = paper_value(config.family, size, ber, metric)
                if vals and paper is not None:
                    out.append(CellComparison(arch, size, ber, metric, (float(np.mean(vals)), min(vals), max(vals)),
                                              paper))
    return out


def table_rows(comparisons: list[CellComparison]) -> list[list[str]]:
    rows = []
    for c in comparisons:
        mark = "yes" if c.inside else "no"
        if not c.paper.consistent:
            mark += " (the paper's mean lies outside its own range: a misprint?)"
        rows.append([c.arch, f"{100 * c.ber:g}%", METRICS[c.metric],
                     f"{c.ours[0]:.3g} ({c.ours[1]:.3g}, {c.ours[2]:.3g})", c.paper.printed, mark])
    return rows


TABLE_HEADERS = ["arch", "train BER", "metric", "ours: mean (min, max)", "paper: mean (a,b) as printed",
                 "ours inside the paper's range"]


def layer_rows(config: Config, records: list[dict]) -> list[list[str]]:
    """Per cell: the mean T-bar of each threshold layer (`layers[l].T_bar`), first layer first."""
    rows = []
    for arch in config.archs():
        for ber in config.train_bers:
            rs = [r for r in records if r["arch"] == arch and r["train_ber"] == ber]
            if not rs or not all("layers" in r for r in rs):
                continue
            per_layer = np.array([[float(layer["T_bar"]["value"]) for layer in r["layers"]] for r in rs]).mean(axis=0)
            rows.append([arch, f"{100 * ber:g}%", f"{np.mean([float(r['T_bar']['value']) for r in rs]):.3g}"]
                        + [f"{v:.3g}" for v in per_layer])
    return rows


def recompute_all(out: Path, record: dict, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, float]]:
    """The record's metrics under the named conventions of verify's registry ({metric:
    convention names}), on its own model and test data: both read once, one forward pass
    serving every convention of every metric (the accuracy that `pi-absolute` scales by
    comes from it too), Pi from the record."""
    model = read_model(out / record["model"])
    data = read_data(out / record["data"], model)
    x, y = data.x.astype(np.int64), data.y
    shared: dict = {}
    if "importance" in record:         # the contract's Pi, exact, as the cell measured it
        shared[("pi", id(x))] = [Fraction(p["exact"]) for p in record["importance"]]
    result: dict[str, dict[str, float]] = {}
    for metric, names in wanted.items():
        result[metric] = {}
        for name in names:
            engine = VariantEngine(model, REGISTRY[name].variant, shared=shared)
            if metric == "T_bar":
                bs = [Fraction(b) for b in PAPER_B]
                tol = engine.tolerance(x, bs)
                result[metric][name] = float(sum(tol.overall[b] for b in bs) / len(bs))
            else:
                result[metric][name] = float(engine.variance(engine.importance(x, y)))
    return result


def explain(out: Path, config: Config, records: list[dict], comparisons: list[CellComparison],
            progress=None, jobs: int = 1) -> list[str]:
    """Lines for the report: per metric with cells outside the paper's range, how many cells
    each convention brings inside, and which (if any) brings every one. The records are
    recomputed on `jobs` processes (the same numbers: each is computed alone, exactly)."""
    outside = {}              # metric -> its compared cells, where some lie outside the paper's range
    lines: dict[str, list[str]] = {metric: [] for metric in EXPLAIN}
    for metric in EXPLAIN:
        cells = [c for c in comparisons if c.metric == metric and c.paper.consistent]
        if cells and all(c.inside for c in cells):
            lines[metric].append(f"- {METRICS[metric]}: every compared cell lies inside the paper's range.")
        elif cells:
            outside[metric] = cells
    values: dict[str, dict[str, dict[tuple[str, float], list[float]]]] = \
        {m: {n: {} for n in EXPLAIN[m]} for m in outside}
    todo = []
    for r in records:
        wanted = {m: EXPLAIN[m] for m, cells in outside.items()
                  if any(c.arch == r["arch"] and c.ber == r["train_ber"] for c in cells)}
        if wanted:
            todo.append((r, wanted))
    for (r, _), result in zip(todo, _recomputed(out, todo, jobs)):
        for metric, by_name in result.items():
            for name, v in by_name.items():
                values[metric][name].setdefault((r["arch"], r["train_ber"]), []).append(v)
        if progress:
            progress()
    for metric, cells in outside.items():
        inside = sum(c.inside for c in cells)
        lines[metric].append(f"- {METRICS[metric]}: {inside} of {len(cells)} cells lie inside the paper's range "
                             "under refbnn's contract (docs/semantics.md §4-5). Recomputed on the same models "
                             "and test data:")
        full = []
        for name in EXPLAIN[metric]:
            k = sum(c.paper.contains(float(np.mean(values[metric][name][(c.arch, c.ber)]))) for c in cells)
            lines[metric].append(f"  - `{name}` ({REGISTRY[name].theirs}): {k} of {len(cells)} inside")
            if k == len(cells):
                full.append(name)
        lines[metric].append(f"  - Finding: {_finding(full, len(cells))}")
    return [line for metric in EXPLAIN for line in lines[metric]]


def _recomputed(out: Path, todo: list[tuple[dict, dict]], jobs: int) -> Iterator[dict]:
    """recompute_all for each (record, wanted), in order; on `jobs` processes when more than
    one (a CNN model's recomputation takes seconds: a run of 240 took most of an hour on one)."""
    if jobs <= 1 or len(todo) < 2:
        for r, wanted in todo:
            yield recompute_all(out, r, wanted)
        return
    with worker_pool(jobs) as pool:          # one BLAS thread per worker, as the cells run
        yield from pool.map(recompute_all, repeat(out), [r for r, _ in todo], [w for _, w in todo])


def _finding(full: list[str], n: int) -> str:
    if not full:
        return (f"no single convention of the registry brings all {n} cells into the paper's range; the "
                "difference is not one of these conventions (training, data or another definition). Nor is it "
                "the authors' FC training recipe: reimplemented in PyTorch and imported, it gives T-bar 0.332 "
                "(fc-8) and 0.361 (fc-16) on Fashion-MNIST, close to refbnn's trainer (benchmarks/authors_recipe.py).")
    return (f"{', '.join(f'`{f}`' for f in full)} brings every one of the {n} cells into the paper's range: "
            "the paper's numbers are consistent with that convention.")


def plot_rows(config: Config, records: list[dict], metric: str, arch: str, size: int) -> Optional[tuple]:
    """(BERs in %, ours mean/min/max, paper mean/low/high) of one size, for the overlay figure."""
    bers, ours, paper = [], [], []
    for ber in config.train_bers:
        vals = _cell_values(records, arch, ber, metric)
        p = paper_value(config.family, size, ber, metric)
        if vals and p is not None:
            bers.append(100 * ber)
            ours.append((np.mean(vals), min(vals), max(vals)))
            paper.append((p.mean, p.low, p.high))
    return (bers, ours, paper) if bers else None
