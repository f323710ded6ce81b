"""A careful float NumPy implementation of the paper's metrics, written apart from refbnn,
that `refbnn verify` accepts: the way to check your own implementation.

It computes what a PyTorch user would compute, in float64: the forward pass with
padding, pooling and flatten, the thresholds with their polarity, T (eqs. 1-5),
Pi (Algorithm 1) and VAR(Pi) (eq. 6), and accuracy under bit errors with the keyed
masks. It writes claims and a trace with `refbnn.claims` and checks them:

    $ python examples/independent_metrics.py
    claims: 79 checked, 79 pass, 0 fail
    trace: 6 arrays (first mode)
    verify: OK

As a command it answers the requests of `refbnn fuzz` and `refbnn conformance run`
(docs/semantics.md §12), and neither finds a disagreement:

    $ refbnn fuzz --impl 'python examples/independent_metrics.py --answer {model} {data} {request} {claims}'
    fuzz: 100 examples, no disagreement; features covered: fc 85, conv 35, ...

Every convention that implementations get wrong is a switch of `Conventions`
(all False: refbnn's contract); `examples/buggy_metrics.py` turns three of them on.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from refbnn.claims import write_claims, write_trace


@dataclass(frozen=True)
class Conventions:
    tie_ge: bool = False           # +1 iff h >= s (the contract: h > s)
    no_polarity: bool = False      # ignore polarity -1
    pad: float = 0.0               # value of padded taps (the contract: absent, i.e. 0)
    swap_pool: bool = False        # pool and threshold in the other order
    flatten_hwc: bool = False      # flatten channels last
    argmax_last: bool = False      # ties to the largest index
    no_z: bool = False             # eq. 2 without / Z
    t_strict: bool = False         # T > b
    no_half: bool = False          # |h - s|
    pooled_mean: bool = False      # eqs. 3-5 as one mean
    layers_unweighted: bool = False
    ddof1: bool = False
    pi_absolute: bool = False
    pi_flip_h: bool = False
    keys_swapped: bool = False     # masks keyed [seed, j, r, t]
    acts_first: bool = False
    granularity: str = "batch"     # "batch", "input" or "pass"
    bits_little: bool = False      # weight bits unpacked little-endian
    first_no_s: bool = False       # the first layer's margin without s
    pi_over_flipped: bool = False  # Pi = (A - A*) / A*
    pi_one_position: bool = False  # flip a conv neuron at its first position only
    output_clean: bool = False     # bit errors spare the output layer
    persistent: bool = False       # weight flips stay, batch after batch


class FloatBNN:
    """A refbnn model (its JSON, read with plain json) evaluated in float64 NumPy."""

    def __init__(self, doc: dict, conv: Conventions = Conventions()):
        import base64
        self.c = conv
        self.shape = tuple(doc["input"]["shape"])
        self.z = doc["input"]["Z"]
        self.binarize = doc["input"].get("binarize")     # the network thresholds its own input
        self.layers = []
        for layer in doc["layers"]:
            layer = dict(layer)
            if "weight" in layer:
                shape = layer["weight"]["shape"]
                bits = np.unpackbits(np.frombuffer(base64.b64decode(layer["weight"]["bits"]), np.uint8),
                                     bitorder="little" if conv.bits_little else "big")
                layer["w"] = np.where(bits[:int(np.prod(shape))] == 1, 1.0, -1.0).reshape(shape)
            self.layers.append(layer)

    def order(self) -> list[int]:
        idx = list(range(len(self.layers)))
        if self.c.swap_pool:
            for i in range(len(idx) - 1):
                if {self.layers[idx[i]]["type"], self.layers[idx[i + 1]]["type"]} == {"threshold", "maxpool2d"}:
                    idx[i], idx[i + 1] = idx[i + 1], idx[i]
        return idx

    def forward(self, x: np.ndarray, flip=None, weights=None, acts=None):
        """(h entering each threshold layer, threshold outputs, scores). `flip` = (layer, channel)."""
        a = x.astype(np.float64)
        if self.binarize:
            shape = (1, -1) + (1,) * (a.ndim - 2)
            s = np.array(self.binarize["thresholds"], dtype=np.float64).reshape(shape)
            neg = np.array(self.binarize.get("polarity", [1] * s.size)).reshape(shape) < 0
            a = np.where((a > s) ^ neg, 1.0, -1.0)
        hs, outs, seen_weight = {}, {}, 0
        for i in self.order():
            layer = self.layers[i]
            kind = layer["type"]
            if kind in ("linear", "conv2d"):
                w = layer["w"] if weights is None or weights[seen_weight] is None else \
                    np.where(weights[seen_weight], -layer["w"], layer["w"])
                if acts is not None and i in acts:
                    a = np.where(acts[i].reshape(a.shape), -a, a)
                seen_weight += 1
                if kind == "linear":
                    a = a.reshape(len(a), -1) @ w.T
                else:
                    p = layer.get("padding", 0)
                    a = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.c.pad)
                    k = w.shape[-1]
                    ho, wo = a.shape[2] - k + 1, a.shape[3] - k + 1
                    out = np.zeros((len(a), w.shape[0], ho, wo))
                    for u in range(ho):
                        for v in range(wo):
                            out[:, :, u, v] = a[:, :, u:u + k, v:v + k].reshape(len(a), -1) @ w.reshape(len(w), -1).T
                    a = out
            elif kind == "threshold":
                s = np.array(layer["thresholds"], dtype=np.float64).reshape((1, -1) + (1,) * (a.ndim - 2))
                pol = np.array(layer.get("polarity", [1] * s.size)).reshape(s.shape)
                h = a.copy()
                if flip is not None and flip[0] == i and self.c.pi_flip_h:
                    h[:, flip[1]] *= -1
                hs[i] = h
                up = h >= s if self.c.tie_ge else h > s
                if not self.c.no_polarity:
                    down = h < s if self.c.tie_ge else h <= s
                    up = np.where(pol < 0, down, up)
                a = np.where(up, 1.0, -1.0)
                if flip is not None and flip[0] == i and not self.c.pi_flip_h:
                    if self.c.pi_one_position and a.ndim == 4:
                        a[:, flip[1], 0, 0] *= -1
                    else:
                        a[:, flip[1]] *= -1
                outs[i] = a
            elif kind == "maxpool2d":
                b, c, hh, ww = a.shape
                a = a[:, :, :hh // 2 * 2, :ww // 2 * 2].reshape(b, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
            else:   # flatten
                a = (a.transpose(0, 2, 3, 1) if self.c.flatten_hwc else a).reshape(len(a), -1)
        return hs, outs, a.reshape(len(a), -1)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        if self.c.argmax_last:
            return scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)
        return np.argmax(scores, axis=1)

    def neurons(self) -> list[tuple[int, int]]:
        return [(i, n) for i, layer in enumerate(self.layers) if layer["type"] == "threshold"
                for n in range(len(layer["thresholds"]))]

    def first_threshold(self) -> int:
        return min(i for i, layer in enumerate(self.layers) if layer["type"] == "threshold")

    def metrics(self, x: np.ndarray, y: np.ndarray, bs=(0.5, 2, 4)) -> dict:
        """Claims keyed by b as given (a number, or a string such as "1/2")."""
        c = self.c
        names = {b: b if isinstance(b, str) else str(b) for b in bs}
        bs = {b: float(Fraction(b)) if isinstance(b, str) else b for b in bs}   # float: correctly rounded
        hs, _, scores = self.forward(x)
        pred = self.predict(scores)
        acc = float(np.mean(pred == y))
        T, layer_T, sizes, pooled = {}, [], [], {b: [0.0, 0.0] for b in bs}
        for i in sorted(hs):
            h = hs[i].reshape(len(x), hs[i].shape[1], -1)
            s = np.array(self.layers[i]["thresholds"], dtype=np.float64)[None, :, None]
            if i == self.first_threshold() and c.first_no_s:
                s = np.zeros_like(s)
            margin = np.abs(h - s) if c.no_half else np.abs(h - s - 0.5)
            if i == self.first_threshold() and not c.no_z and not self.binarize:
                margin = margin / self.z
            per_b = {}
            for b in bs:
                hit = margin > bs[b] if c.t_strict else margin >= bs[b]
                per_b[b] = float(hit.mean(axis=2).mean(axis=1).mean())    # eq. 3, then eq. 4 per layer, eq. 5
                pooled[b][0] += hit.sum()
                pooled[b][1] += hit.size
            layer_T.append(per_b)
            sizes.append(h.shape[1])
        for b in bs:
            if c.pooled_mean:
                T[b] = pooled[b][0] / pooled[b][1]
            elif c.layers_unweighted:
                T[b] = float(np.mean([lt[b] for lt in layer_T]))
            else:
                T[b] = sum(lt[b] * n for lt, n in zip(layer_T, sizes)) / sum(sizes)
        if acc == 0:
            raise ValueError("accuracy is 0 on these inputs, so Pi = (A - A*) / A is undefined")
        pi = []
        for i, n in self.neurons():
            a_star = float(np.mean(self.predict(self.forward(x, flip=(i, n))[2]) == y))
            pi.append(acc - a_star if c.pi_absolute else (acc - a_star) / a_star if c.pi_over_flipped
                      else (acc - a_star) / acc)
        var = float(np.var(pi, ddof=1 if c.ddof1 else 0))
        layers = [{"T": {names[b]: lt[b] for b in bs}} for lt in layer_T]
        return {"accuracy": acc, "T": {names[b]: T[b] for b in bs}, "layers": layers, "importance": pi,
                "var_importance": var, "predictions": pred.tolist()}

    def bit_errors(self, x, y, ber: float, reps: int, seed: int, batch_size: int, activations: bool = False) -> dict:
        """Accuracy per repetition under keyed masks: default_rng([seed, r, j, t]).random(shape) < p,
        t numbering the weight tensors first, then the inputs of the hidden weight layers."""
        c = self.c
        size = {"batch": batch_size, "input": 1, "pass": len(x)}[c.granularity]
        weight_layers = [i for i, layer in enumerate(self.layers) if "w" in layer]
        hidden = weight_layers[1:] if activations else []
        n_w, n_a = len(weight_layers), len(hidden)
        accs = []
        for r in range(reps):
            correct = 0
            stored = None                # persistent: the weight bits toggled so far
            for j, start in enumerate(range(0, len(x), size)):
                def mask(t, shape):
                    key = [seed, j, r, t] if c.keys_swapped else [seed, r, j, t]
                    return np.random.default_rng(key).random(shape) < ber
                weights = [mask(t + (n_a if c.acts_first else 0), self.layers[i]["w"].shape)
                           for t, i in enumerate(weight_layers)]
                if c.output_clean:
                    weights[-1] = None
                if c.persistent:
                    stored = weights if stored is None else [w if s is None else s ^ w for s, w in zip(stored, weights)]
                    weights = stored
                xb = x[start:start + size]
                acts = {}
                for k, i in enumerate(hidden):
                    shape = self.forward_shape(xb[:1], i)
                    acts[i] = mask(k if c.acts_first else n_w + k, (size,) + shape)[:len(xb)]
                pred = self.predict(self.forward(xb, weights=weights, acts=acts)[2])
                correct += int((pred == y[start:start + size]).sum())
            accs.append(correct / len(x))
        return {"seed": seed, "batch_size": batch_size, "activations": activations,
                "results": [{"ber": str(ber), "accuracies": accs}]}

    def forward_shape(self, x1: np.ndarray, stop: int) -> tuple:
        """The shape (without the batch axis) of the tensor entering layer `stop`."""
        a = x1.astype(np.float64)
        for i in range(stop):
            layer = self.layers[i]
            if layer["type"] == "flatten":
                a = a.reshape(len(a), -1)
            elif layer["type"] == "maxpool2d":
                a = a[:, :, :a.shape[2] // 2 * 2:2, :a.shape[3] // 2 * 2:2]
            elif layer["type"] == "linear":
                a = np.zeros((len(a), layer["w"].shape[0]))
            elif layer["type"] == "conv2d":
                p, k = layer.get("padding", 0), layer["w"].shape[-1]
                a = np.zeros((len(a), layer["w"].shape[0], a.shape[2] + 2 * p - k + 1, a.shape[3] + 2 * p - k + 1))
        return a.shape[1:]


def answer(doc: dict, data_path: str, request_path: str, claims_path: str, trace_path: str | None = None,
           conv: Conventions = Conventions(), network: type = FloatBNN) -> None:
    """Answer a `refbnn fuzz` / `refbnn conformance run` request: the claims it asks for,
    and a trace of every layer when given a path for it."""
    request = json.loads(Path(request_path).read_text())
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    net = network(doc, conv)
    m = net.metrics(x, y, bs=request["b"])
    m["T_bar"] = float(np.mean(list(m["T"].values())))
    if not request["importance"]:
        del m["importance"], m["var_importance"]
    be = request["bit_errors"]
    if be is not None:
        results = []
        for ber in be["ber"]:
            accs = net.bit_errors(x, y, float(Fraction(ber)), be["reps"], be["seed"], be["batch_size"],
                                  be.get("activations", False))["results"][0]["accuracies"]
            results.append({"ber": ber, "accuracies": accs, "mean": float(np.mean(accs)),
                            "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0})
        m["bit_errors"] = {"seed": be["seed"], "batch_size": be["batch_size"],
                           "activations": be.get("activations", False), "results": results}
    write_claims(claims_path, **m)
    if trace_path:
        hs, outs, scores = net.forward(x)
        write_trace(trace_path, h=hs, a=outs, scores=scores, predictions=net.predict(scores))


def main() -> None:
    import subprocess

    if len(sys.argv) in (6, 7) and sys.argv[1] == "--answer":    # --answer MODEL DATA REQUEST CLAIMS [TRACE]
        try:
            answer(json.loads(Path(sys.argv[2]).read_text()), *sys.argv[3:])
        except ValueError as e:
            sys.exit(f"independent_metrics: {e}")
        return
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        subprocess.run([sys.executable, "-m", "refbnn.cli", "example-model", str(d), "--inputs", "60"],
                       check=True, capture_output=True)
        doc = json.loads((d / "example.json").read_text())
        data = np.load(d / "example.npz")
        net = FloatBNN(doc)
        m = net.metrics(data["x"], data["y"])
        write_claims(d / "claims.json", **m)
        hs, outs, scores = net.forward(data["x"])
        write_trace(d / "trace.npz", h=hs, a=outs, scores=scores, predictions=net.predict(scores))
        r = subprocess.run([sys.executable, "-m", "refbnn.cli", "verify", str(d / "example.json"),
                            str(d / "example.npz"), "--claims", str(d / "claims.json"), "--atol", "1e-12",
                            "--trace", str(d / "trace.npz")], capture_output=True, text=True)
        print("\n".join(line for line in r.stdout.splitlines()
                        if line.startswith(("claims:", "trace:", "verify:", "diagnosis:", "first divergence"))))


if __name__ == "__main__":
    main()
