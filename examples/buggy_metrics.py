"""Three bugs that BNN implementations really ship, and how `refbnn verify` names each one.

The careful implementation of `examples/independent_metrics.py`, with one convention
changed at a time: a threshold tie that gives +1, padding with -1 instead of absent
taps, and a first-layer margin without the 1/Z of eq. 2. Each writes its claims and a
trace; verify finds the first divergence and the convention that explains it:

    $ python examples/buggy_metrics.py
    == tie rule (h >= s) ==
    claims: 79 checked, 79 pass, 0 fail
    first divergence: a1 at input 0, channel 1, position [7, 3]: expected -1, got 1 (31 of 15360 entries differ)
    pattern: all 31 differences are at h = s (a threshold tie; refbnn gives -1 there for polarity +1)
    diagnosis: your traced values match refbnn exactly if a threshold tie (h = s) gives +1; refbnn's contract gives -1 at a tie: +1 iff h > s (docs/semantics.md §2.3)
    == padding with -1 ==
    claims: 79 checked, 63 pass, 16 fail
    diagnosis: your accuracy, predictions, T, per-layer T, Pi and VAR(Pi) match refbnn exactly if padded taps count as -1 (e.g. a popcount over the full window, the absent bits read as 0); padded taps are absent, adding nothing (docs/semantics.md §2.2)
    first divergence: h1 at input 0, channel 0, position [0, 0]: expected 0, got 3 (6720 of 15360 entries differ)
    pattern: all 6720 differences are at border positions (where the padding enters)
    diagnosis: your traced values match refbnn exactly if padded taps count as -1 (e.g. a popcount over the full window, the absent bits read as 0); padded taps are absent, adding nothing (docs/semantics.md §2.2)
    == first layer without 1/Z ==
    claims: 79 checked, 73 pass, 6 fail
    pattern: only the first layer's T fails: the 1/Z of eq. 2?
    diagnosis: your T and per-layer T match refbnn exactly if the first layer's margin is not divided by Z; eq. 2 divides the first weight layer's margin by Z (docs/semantics.md §4)

A trace finds the tie rule although every claim passes: the ties change no metric of
this data set, only single activations. `refbnn fuzz` finds all three from scratch,
on models it builds to show them (docs/semantics.md §12), each shrunk to a few neurons:

    $ refbnn fuzz --impl 'python examples/buggy_metrics.py --bug tie-ge {model} {data} {request} {claims}'

"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from refbnn.claims import write_claims, write_trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from independent_metrics import Conventions, FloatBNN, answer  # noqa: E402

BUGS = {"tie rule (h >= s)": Conventions(tie_ge=True),
        "padding with -1": Conventions(pad=-1.0),
        "first layer without 1/Z": Conventions(no_z=True)}
COMMAND_BUGS = {"tie-ge": BUGS["tie rule (h >= s)"], "pad-minus-one": BUGS["padding with -1"],
                "first-layer-without-z": BUGS["first layer without 1/Z"]}
SHOWN = ("claims:", "pattern:", "diagnosis:", "first divergence:")


def run(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "refbnn.cli", *args], capture_output=True, text=True).stdout


def main() -> None:
    if len(sys.argv) in (7, 8) and sys.argv[1] == "--bug":   # --bug NAME MODEL DATA REQUEST CLAIMS [TRACE]
        name, model, data, request, claims, *trace = sys.argv[2:]
        try:
            answer(json.loads(Path(model).read_text()), data, request, claims, *trace, conv=COMMAND_BUGS[name])
        except ValueError as e:
            sys.exit(f"buggy_metrics: {e}")
        return
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        run("example-model", str(d), "--inputs", "60")
        model, data_path = d / "example.json", d / "example.npz"
        doc = json.loads(model.read_text())
        data = np.load(data_path)
        for title, conv in BUGS.items():
            net = FloatBNN(doc, conv)
            write_claims(d / "claims.json", **net.metrics(data["x"], data["y"]))
            hs, outs, scores = net.forward(data["x"])
            write_trace(d / "trace.npz", h=hs, a=outs, scores=scores, predictions=net.predict(scores))
            out = run("verify", str(model), str(data_path), "--claims", str(d / "claims.json"), "--atol", "1e-12",
                      "--trace", str(d / "trace.npz"))
            print(f"== {title} ==")
            print("\n".join(line for line in out.splitlines() if line.startswith(SHOWN)))


if __name__ == "__main__":
    main()
