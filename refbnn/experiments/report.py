"""The results of an experiment: results.json, results.csv, the table, plots and report.md
(docs/experiments.md)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import numpy as np
from tabulate import tabulate

from ..formats.files import atomic_open, read_json, write_json
from ..reports.provenance import versions
from . import paperdiff, plots
from .cells import Config, cells
from .findings import paper_claims
from .runner import record_path

CSV_KEYS = ("arch", "train_ber", "rep", "seed", "accuracy", "T_bar", "var_importance", "model", "data")


def collect(out: Path, config: Config) -> list[dict]:
    """The records of every finished cell, in the experiment's fixed cell order."""
    return [read_json(record_path(out, c)) for c in cells(config) if record_path(out, c).exists()]


def _v(record: dict, key: str) -> Optional[float]:
    return float(record[key]["value"]) if key in record else None


def summary_rows(config: Config, records: list[dict]) -> list[list]:
    """Per architecture and training BER: mean (min, max) of VAR(Pi) and T-bar, as in Table III."""
    rows = []
    for arch in config.archs():
        for ber in config.train_bers:
            rs = [r for r in records if r["arch"] == arch and r["train_ber"] == ber]
            if not rs:
                continue
            row = [arch, f"{100 * ber:g}%", len(rs), f"{np.mean([_v(r, 'accuracy') for r in rs]):.4f}"]
            for key in ("var_importance", "T_bar"):
                vals = [_v(r, key) for r in rs if key in r]
                row.append(f"{np.mean(vals):.3g} ({min(vals):.3g}, {max(vals):.3g})" if vals else "")
            rows.append(row)
    return rows


HEADERS = ["arch", "train BER", "reps", "accuracy", "VAR(Pi) mean (min, max)", "T-bar mean (min, max)"]


def write_results(out: Path, config: Config, records: list[dict]) -> None:
    write_json(out / "results.json", records)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_KEYS)
    for r in records:
        w.writerow([_v(r, k) if isinstance(r.get(k), dict) else r.get(k, "") for k in CSV_KEYS])
    with atomic_open(out / "results.csv", "w") as f:
        f.write(buf.getvalue())


def write_report(out: Path, config: Config, records: list[dict], command: str, elapsed: Optional[float],
                 jobs: int = 1) -> list[str]:
    """report.md with the table, the plots (or why they are missing), the command, the
    versions, and each claim of the paper with its test (the differences with the paper
    recomputed on `jobs` processes). Returns the figure files."""
    figures = plots.figures(config, records, out) if plots.available() else []
    claims = paper_claims(config, records)
    lines = [f"# refbnn experiment {config.experiment}", "",
             f"Command: `{command}`", "",
             f"{versions()}; {len(records)} cells" + (f", {elapsed:.0f} s wall time." if elapsed is not None
                                                       else " (reported with --report-only)."), "",
             *_unfinished(config, records),
             "Configuration: " + ", ".join(f"{k} = {v}" for k, v in config.as_json().items()), "",
             "## Results", "", "Mean over the repetitions, (min, max) in brackets, as in the paper's Table III.", "",
             tabulate(summary_rows(config, records), headers=HEADERS, tablefmt="github"), "",
             "Every number comes from the model files in `models/` measured on `data/test.npz`; "
             "`refbnn metrics models/KEY.json data/test.npz --importance` gives it again exactly. "
             "Per cell: `results.json`, `results.csv`.", ""]
    lines += ["## Figures", ""]
    if figures:
        lines += [f"![{name}]({name})" for name in figures if name.endswith(".png")] + [""]
    else:
        lines += ["Plots were skipped: matplotlib is not installed (`pip install 'refbnn[plots]'`).", ""]
    lines += _beside_the_paper(out, config, records, jobs)
    lines += ["## The paper's claims, here", "",
              "Each comparison tests the claim in its own direction over the repetitions: an exact one-sided "
              "permutation test of the Mann-Whitney U statistic (p <= 0.05), with the smallest p these repetitions "
              "can attain, and the effect as the Hodges-Lehmann shift (flip-trained minus regular) with its exact "
              "95% interval. A comparison *holds* when the claimed direction is significant, is *not held* when "
              "the opposite one is, and otherwise *cannot tell*; \"not lower\" holds only when the shift's one-sided "
              "lower bound is above -20% of the regular models' median. A claim holds when more than half of its "
              "comparisons hold and none contradicts it, is not held when one contradicts it and no more hold it, "
              "and otherwise cannot tell (docs/experiments.md).", ""]
    for c in claims:
        lines.append(f"- **{c.claim}**: {c.outcome}")
        lines += [f"  - {e}" for e in c.evidence]
    if not claims:
        lines.append("- (this configuration tests none of them)")
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return figures


def _beside_the_paper(out: Path, config: Config, records: list[dict], jobs: int = 1) -> list[str]:
    """The paper's Table III next to ours, T-bar per layer, and the differences explained."""
    lines = ["## Beside the paper", ""]
    if not paperdiff.comparable(config):
        return lines + [f"The paper's Table III is on Fashion-MNIST (100 epochs, 10 repetitions); this run is on "
                        f"{config.dataset} ({config.experiment}, {config.family}), so it is not compared cell by "
                        "cell.", ""]
    cells = paperdiff.compare_cells(config, records)
    inside = sum(c.inside for c in cells)
    lines += [f"Per cell, our mean (min, max) over {config.reps} repetitions of {config.epochs} epochs and the paper's "
              f"Table III ({'a' if config.family == 'fc' else 'b'}) exactly as printed (mean, then the two ends of "
              f"its range; `refbnn/experiments/paper_table3.py`). {inside} of {len(cells)} of our means lie inside "
              "the paper's min-max range.", "",
              tabulate(paperdiff.table_rows(cells), headers=paperdiff.TABLE_HEADERS, tablefmt="github"), ""]
    rows = paperdiff.layer_rows(config, records)
    if rows:
        depth = max(len(r) for r in rows) - 3
        lines += ["T-bar per threshold layer (mean over the repetitions; the first layer's margins divided by Z, "
                  "eq. 2): the whole-model T-bar is their neuron-weighted mean.", "",
                  tabulate(rows, headers=["arch", "train BER", "T-bar"] + [f"layer {k + 1}" for k in range(depth)],
                           tablefmt="github"), ""]
    lines += ["### The differences, explained?", "",
              "Where cells fall outside the paper's range, each metric is recomputed on these models and test data "
              "under the conventions of refbnn's verify registry that change the metric but not the network "
              "(docs/semantics.md §11.2). A finding about the paper's table, not a change to refbnn.", ""]
    lines += (paperdiff.explain(out, config, records, cells, jobs=jobs)
              or ["- Every compared cell lies inside the paper's range."])
    return lines + [""]


def _unfinished(config: Config, records: list[dict]) -> list[str]:
    """A paragraph when the run has not finished every cell: which are missing, how to go on."""
    total = cells(config)
    if len(records) >= len(total):
        return []
    done = {(r["arch"], r["train_ber"]) for r in records}
    missing = sorted({(c.arch, c.train_ber) for c in total} - done)
    return [f"**Unfinished: {len(records)} of {len(total)} cells.** Cells with no repetition yet: "
            f"{', '.join(f'{a} at {100 * b:g}%' for a, b in missing[:12]) or 'none'}"
            f"{' ...' if len(missing) > 12 else ''}. The same command with `--resume` continues the run; "
            "every table and verdict below uses the finished cells only.", ""]
