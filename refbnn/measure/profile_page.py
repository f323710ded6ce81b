"""profile.md: the figures and a short reading of them, every sentence computed from the
profile's numbers (refbnn.measure.profile), with the command and versions that made it."""
from __future__ import annotations

import numpy as np

from ..reports.provenance import versions


def _v(q) -> float:
    return float(q["value"]) if isinstance(q, dict) else float(q)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_reading(doc: dict) -> list[str]:
    clean = _v(doc["accuracy"])
    results = doc["bit_errors"]["results"]
    out = [f"Clean accuracy: {_pct(clean)} on {doc['inputs']} inputs."]
    for r in results:
        if float(r["ber"]) > 0:
            ci = f" (95% interval {_pct(r['ci95'][0])} to {_pct(r['ci95'][1])})" if r["ci95"] else ""
            out.append(f"At BER {r['ber']}: mean accuracy {_pct(_v(r['mean']))} over {r['reps']} "
                       f"repetitions{ci}.")
    drop = [r for r in results if float(r["ber"]) > 0 and _v(r["mean"]) < clean - 0.05]
    out.append(f"The mean accuracy first falls more than 5 points below clean at BER {drop[0]['ber']}."
               if drop else "The mean accuracy stays within 5 points of clean at every BER measured.")
    return out


def tolerance_reading(doc: dict) -> list[str]:
    layers = doc["layers"]
    weakest = min(layers, key=lambda layer: _v(layer["T_bar"]))
    out = [f"T-bar = {_v(doc['T_bar']):.3f} over b in {{{', '.join(doc['T'])}}}; the lowest layer is layer "
           f"{weakest['layer']} (T-bar {_v(weakest['T_bar']):.3f}, {weakest['neurons']} neurons"
           f"{', first layer: eq. 2 divides by Z' if weakest['first'] else ''})."]
    for layer, entry in doc["profile"]["margins"].items():
        counts = entry["tolerated_flips"]
        total = sum(counts)
        two = sum(counts[2:]) / total
        zero = counts[0] / total
        out.append(f"Layer {layer}: {_pct(two)} of its margins tolerate 2 or more weight flips, {_pct(zero)} "
                   f"tolerate none (Theorem 1).")
    return out


def importance_reading(doc: dict) -> list[str]:
    if "importance" not in doc:
        return ["Algorithm 1 was skipped (--no-importance): no Pi, no VAR(Pi)."]
    out = [f"VAR(Pi) = {_v(doc['var_importance']):.3g} (eq. 6)."]
    for layer, share in doc["profile"]["importance_share"].items():
        if _v(share["total"]) <= 0:
            out.append(f"Layer {layer}: flipping any one of its {share['neurons']} neurons costs no accuracy.")
        else:
            out.append(f"Layer {layer}: {share['carry_half']} of {share['neurons']} neurons carry half of the "
                       f"layer's total importance.")
    pi = [_v(p) for p in doc["importance"]]
    top = int(np.argmax(pi))
    out.append(f"The most important neuron is neuron {top} (Pi = {pi[top]:.3g}): flipping its output loses "
               f"{_pct(pi[top] * _v(doc['accuracy']))} of the inputs.")
    return out


def certified_reading(doc: dict) -> list[str]:
    cert = doc["profile"]["certified"]
    out = []
    items = sorted(((int(k), _v(v)) for k, v in cert["certified_accuracy"].items()))
    for k, v in items:
        if v == 0 and k > 0:
            out.append(f"Certified: no test input keeps a correct prediction under any {k} or more weight flips "
                       "per neuron (of those asked)." if k != items[-1][0] else
                       f"Certified: no test input keeps a correct prediction under any {k} weight flips per neuron.")
            break
        out.append(f"Certified: {_pct(v)} of the test inputs are classified correctly and keep that "
                   f"prediction under any {k} weight flip{'s' if k != 1 else ''} per neuron.")
    worst = max(cert["bottleneck"].items(), key=lambda kv: kv[1])
    if worst[1]:
        out.append(f"What limits the certificate most often: {worst[0]} ({worst[1]} inputs).")
    return out


def protection_reading(doc: dict) -> list[str]:
    prot = doc["profile"].get("protection")
    if not prot:
        return []
    out = [f"Protected ({prot['spec']}): {prot['described']}. Control: as many units of the same layers, "
           f"chosen at random ({prot['controls']} choices, averaged per repetition); both read the same flips "
           f"as the unprotected model, less their protected bits."]
    wins, losses = [], []
    for r in prot["results"]:
        if float(r["ber"]) <= 0:
            continue
        line = (f"BER {r['ber']}: unprotected {_pct(_v(r['unprotected_mean']))}, protected "
                f"{_pct(_v(r['protected_mean']))}, random control {_pct(_v(r['control_mean']))}; "
                f"p = {_v(r['p_beats_random']):.3g} that the protection beats random")
        out.append(line + (" (significant)." if r["beats_random"] else "."))
        (wins if r["beats_random"] else losses).append(r["ber"])
    min_p = _v(prot["results"][0]["min_p"])
    if wins:
        out.append(f"Answer: protecting these units helps more than protecting as many random ones at BER "
                   f"{', '.join(wins)} (paired sign-flip test, p <= {prot['alpha']}).")
    else:
        out.append("Answer: at no BER does protecting these units beat as many random ones significantly"
                   f" (the smallest p attainable with these repetitions is {min_p:.3g}).")
    if losses and wins:
        out.append(f"Not significant at BER {', '.join(losses)}.")
    return out


def write_page(doc: dict, figures: list[str], command: str) -> str:
    """The markdown text of profile.md."""
    shown = [f for f in figures if f.endswith(".png")]

    def fig(name: str) -> list[str]:
        return [f"![{name}]({name}.png)", ""] if f"{name}.png" in shown else []

    skipped = [] if figures else ["Figures were skipped: matplotlib is not installed "
                                  "(`pip install 'refbnn[plots]'`); every number is in profile.json.", ""]
    lines = [f"# Bit error tolerance profile: {doc.get('model', 'model')}", "",
             f"Data: {doc.get('data', '?')}, {doc['inputs']} inputs; {doc['neurons']} neurons.", ""] + skipped
    lines += ["## Accuracy under bit errors", ""] + fig("accuracy") + [f"- {s}" for s in accuracy_reading(doc)] + [""]
    if protection_reading(doc):
        lines += ["## What protection buys", ""] + [f"- {s}" for s in protection_reading(doc)] + [""]
    lines += ["## Margins (eqs. 1-5, Theorem 1)", ""] + fig("tolerance") + fig("margins")
    lines += [f"- {s}" for s in tolerance_reading(doc)] + [""]
    lines += ["## Neuron importance (Algorithm 1, eq. 6)", ""] + fig("importance")
    lines += [f"- {s}" for s in importance_reading(doc)] + [""]
    lines += ["## Certified accuracy", ""] + fig("certified") + [f"- {s}" for s in certified_reading(doc)] + [""]
    lines += ["## How this was made", "", f"Command: `{command}`", "", versions() + ".", "",
              "Every number is in `profile.json`, exact where exact; `refbnn verify MODEL DATA --claims "
              "profile.json` recomputes the accuracy, T, Pi, VAR(Pi) and the accuracies under bit errors.", ""]
    return "\n".join(lines)

