"""Buggy implementations whose mistakes are in no convention of verify's registry: wrong
code rather than a wrong convention. tests/test_fuzz_mutants.py checks that `refbnn fuzz`
and the conformance suite find each, from scratch.

    python tests/mutant_metrics.py NAME MODEL DATA REQUEST CLAIMS [TRACE]
"""
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from independent_metrics import FloatBNN, answer  # noqa: E402


class KernelRotated(FloatBNN):
    """A true convolution (kernel flipped in both axes) where the contract correlates."""

    def __init__(self, doc, conv):
        super().__init__(doc, conv)
        for layer in self.layers:
            if layer["type"] == "conv2d":
                layer["w"] = layer["w"][..., ::-1, ::-1].copy()


class BinarizePolarityIgnored(FloatBNN):
    """The input binarisation (§2.6) with every polarity taken as +1."""

    def __init__(self, doc, conv):
        super().__init__(doc, conv)
        if self.binarize:
            self.binarize = {**self.binarize, "polarity": [1] * len(self.binarize["thresholds"])}


class FirstLayerSpared(FloatBNN):
    """Bit errors that never reach the first weight layer."""

    def forward(self, x, flip=None, weights=None, acts=None):
        if weights is not None:
            weights = [None] + list(weights[1:])
        return super().forward(x, flip, weights, acts)


class MeanOverOneInputTooMany(FloatBNN):
    """Eq. 5 divided by I + 1 (an off-by-one in the mean over inputs)."""

    def metrics(self, x, y, bs=(0.5, 2, 4)):
        m = super().metrics(x, y, bs)
        m["T"] = {b: v * len(x) / (len(x) + 1) for b, v in m["T"].items()}
        return m


class BinarizedFirstLayerOverZ(FloatBNN):
    """Eq. 2's 1/Z applied to a first layer that reads the binarised input (§2.6: eq. 1)."""

    def __init__(self, doc, conv):
        super().__init__(doc, conv)
        self.rule, self.binarize = self.binarize, None    # the metrics then take eq. 2 for the first layer

    def forward(self, x, flip=None, weights=None, acts=None):
        self.binarize = self.rule
        try:
            return super().forward(x, flip, weights, acts)
        finally:
            self.binarize = None


MUTANTS = {"kernel-rotated": KernelRotated, "binarize-polarity-ignored": BinarizePolarityIgnored,
           "first-layer-spared": FirstLayerSpared, "mean-over-one-input-too-many": MeanOverOneInputTooMany,
           "binarized-first-layer-over-z": BinarizedFirstLayerOverZ}


if __name__ == "__main__":
    name, model, data, request, claims, *trace = sys.argv[1:]
    try:
        answer(json.loads(Path(model).read_text()), data, request, claims, *trace, network=MUTANTS[name])
    except ValueError as e:
        sys.exit(f"mutant_metrics: {e}")
