"""The conventions other implementations get wrong, each one named alternative to the
contract (docs/semantics.md §11): the registry.

`verify` recomputes a failing claim or trace under every alternative (and pairs of
them) and reports those that reproduce the other side's numbers exactly. Each
alternative is one field of `Variant`; its default is the contract. The engine that
computes under them is `refbnn.oracle.variants.VariantEngine`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional


@dataclass(frozen=True)
class Variant:
    """Switches, one per alternative convention; all False/None is the contract."""

    tie_ge: bool = False            # +1 iff h >= s (polarity +1)
    no_polarity: bool = False       # polarity -1 ignored
    pad: Optional[int] = None       # padded taps count as this value (None: absent)
    swap_pool: bool = False         # threshold and maxpool in the other order
    flatten_hwc: bool = False       # flatten channels last
    argmax_last: bool = False       # ties to the largest index
    no_z: bool = False              # eq. 2 without 1/Z
    t_strict: bool = False          # T > b
    no_half: bool = False           # |h - s|
    pooled_mean: bool = False       # eqs. 3-5 as one mean over all triples
    layers_unweighted: bool = False  # whole-model T: plain mean of the per-layer T
    ddof1: bool = False             # VAR(Pi) with ddof = 1
    pi_absolute: bool = False       # Pi = A - A*
    pi_flip_h: bool = False         # Algorithm 1 negates h, not the output
    keys_swapped: bool = False      # masks keyed [seed, j, r, t]
    acts_first: bool = False        # activation tensors numbered before weight tensors
    granularity: Optional[str] = None   # "input" or "pass" instead of per batch
    bits_little: bool = False       # weight bits unpacked little-endian within each byte
    first_no_s: bool = False        # the first layer's margin without its threshold s
    pi_over_flipped: bool = False   # Pi = (A - A*) / A*
    pi_one_position: bool = False   # Algorithm 1 flips a conv neuron at its first position only
    output_clean: bool = False      # bit errors spare the output layer
    persistent: bool = False        # weight flips stay (stored bits toggle batch after batch)
    std_ddof0: bool = False         # the spread over repetitions with ddof = 0

    @property
    def forward(self) -> bool:
        """Whether the forward pass itself (h, outputs, scores) differs from the contract."""
        return any((self.tie_ge, self.no_polarity, self.pad is not None, self.swap_pool, self.flatten_hwc,
                    self.bits_little))

    @property
    def signature(self) -> tuple:
        """The forward switches: variants with equal signatures run the same forward pass."""
        return (self.tie_ge, self.no_polarity, self.pad, self.swap_pool, self.flatten_hwc, self.bits_little)

    @property
    def full_pi(self) -> bool:
        """Whether Pi needs Algorithm 1 run as written (no incremental form under the switches)."""
        return self.forward or self.pi_flip_h or self.argmax_last or self.pi_one_position

    @property
    def masks(self) -> bool:
        return self.keys_swapped or self.acts_first or self.granularity is not None or self.output_clean \
            or self.persistent


CONTRACT = Variant()


@dataclass(frozen=True)
class Convention:
    """One registry entry: what the other side does, what the contract says, and where."""

    name: str
    variant: Variant
    theirs: str
    contract: str
    affects: frozenset       # quantity families: "forward", "T", "importance", "bit_errors"


_F, _T, _P, _B = "forward", "T", "importance", "bit_errors"
# A forward convention changes every quantity, the accuracies under bit errors included:
# the variant engine replays refbnn's keyed masks (and the mask conventions' keyings)
# under it, so a forward mistake is diagnosed from bit error claims too.
_ALL = frozenset({_F, _T, _P, _B})

REGISTRY: dict[str, Convention] = {c.name: c for c in [
    Convention("tie-ge", Variant(tie_ge=True), "a threshold tie (h = s) gives +1",
               "refbnn's contract gives -1 at a tie: +1 iff h > s (docs/semantics.md §2.3)", _ALL),
    Convention("polarity-ignored", Variant(no_polarity=True), "polarity -1 is ignored (+1 iff h > s everywhere)",
               "polarity -1 gives +1 iff h <= s (docs/semantics.md §2.3)", _ALL),
    Convention("pad-minus-one", Variant(pad=-1), "padded taps count as -1 (e.g. a popcount over the full "
               "window, the absent bits read as 0)",
               "padded taps are absent, adding nothing (docs/semantics.md §2.2)", _ALL),
    Convention("pad-plus-one", Variant(pad=1), "padded taps count as +1",
               "padded taps are absent, adding nothing (docs/semantics.md §2.2)", _ALL),
    Convention("pool-threshold-swapped", Variant(swap_pool=True), "pooling and threshold run in the other order",
               "the model's layer order decides, and T uses the h entering the threshold (docs/semantics.md §2.4)",
               _ALL),
    Convention("flatten-channels-last", Variant(flatten_hwc=True), "flatten is in H, W, C order (channels last)",
               "flatten is in C, H, W order, channel slowest (docs/semantics.md §2.1)", _ALL),
    Convention("argmax-last", Variant(argmax_last=True), "argmax ties go to the largest index",
               "ties go to the smallest index (docs/semantics.md §2.5)", frozenset({_F, _P, _B})),
    Convention("first-layer-without-z", Variant(no_z=True), "the first layer's margin is not divided by Z",
               "eq. 2 divides the first weight layer's margin by Z (docs/semantics.md §4)", frozenset({_T})),
    Convention("t-strict", Variant(t_strict=True), "T^b counts margins T > b",
               "eq. 3 counts T >= b (docs/semantics.md §4)", frozenset({_T})),
    Convention("margin-without-half", Variant(no_half=True), "the margin is |h - s|, without the 1/2",
               "eq. 1 is |h - s - 1/2| (docs/semantics.md §4)", frozenset({_T})),
    Convention("pooled-mean", Variant(pooled_mean=True),
               "eqs. 3-5 are pooled into one mean over all (input, neuron, position) triples",
               "T^b averages positions per neuron, then neurons per input, then inputs (docs/semantics.md §4)",
               frozenset({_T})),
    Convention("layers-unweighted", Variant(layers_unweighted=True),
               "the whole-model T is the plain mean of the per-layer T",
               "the whole-model T weights each layer by its N_l / N (docs/semantics.md §4)", frozenset({_T})),
    Convention("var-ddof1", Variant(ddof1=True), "VAR(Pi) divides by N - 1 (ddof = 1)",
               "eq. 6 is the population variance, 1/N (docs/semantics.md §5)", frozenset({_P})),
    Convention("pi-absolute", Variant(pi_absolute=True), "Pi is the absolute drop A - A*",
               "Pi is the relative drop (A - A*) / A (docs/semantics.md §5)", frozenset({_P})),
    Convention("pi-flip-h", Variant(pi_flip_h=True), "Algorithm 1 negates the neuron's h, not its output",
               "Algorithm 1 negates the neuron's threshold output (docs/semantics.md §5)", frozenset({_P})),
    Convention("keys-batch-first", Variant(keys_swapped=True), "BER masks are keyed [seed, batch, rep, tensor]",
               "masks are keyed default_rng([seed, r, j, t]) (docs/semantics.md §6)", frozenset({_B})),
    Convention("activations-numbered-first", Variant(acts_first=True),
               "activation tensors are numbered before the weight tensors",
               "weight tensors are numbered first, then activation tensors (docs/semantics.md §6)",
               frozenset({_B})),
    Convention("masks-per-input", Variant(granularity="input"), "a fresh BER mask per input",
               "a fresh mask per batch of inputs (docs/semantics.md §6)", frozenset({_B})),
    Convention("masks-per-pass", Variant(granularity="pass"), "one BER mask per repetition (per pass)",
               "a fresh mask per batch of inputs (docs/semantics.md §6)", frozenset({_B})),
    Convention("bits-little-endian", Variant(bits_little=True),
               "the weight bits are unpacked little-endian (the first weight in the lowest bit of a byte)",
               "bits are packed big-endian, the first weight in the highest bit of each byte "
               "(docs/semantics.md §3.1)", _ALL),
    Convention("first-layer-without-s", Variant(first_no_s=True), "the first layer's margin leaves out its "
               "threshold: |h - 1/2| / Z", "eq. 2 is |h - s - 1/2| / Z (docs/semantics.md §4)", frozenset({_T})),
    Convention("pi-over-flipped", Variant(pi_over_flipped=True), "Pi is normalised by the accuracy with the "
               "neuron flipped: (A - A*) / A*", "Pi is normalised by the clean accuracy: (A - A*) / A "
               "(docs/semantics.md §5)", frozenset({_P})),
    Convention("conv-pi-one-position", Variant(pi_one_position=True), "Algorithm 1 flips a conv neuron at one "
               "position (its first) only", "Algorithm 1 flips the neuron's output at every position "
               "(docs/semantics.md §5)", frozenset({_P})),
    Convention("output-layer-clean", Variant(output_clean=True), "bit errors leave the output layer's weights "
               "clean", "every weight layer is targeted, the output layer included, unless layers are given "
               "(docs/semantics.md §6)", frozenset({_B})),
    Convention("persistent-errors", Variant(persistent=True), "flipped weight bits stay flipped: each batch's "
               "flips toggle the stored bits of the batches before", "errors are transient: each batch reads "
               "the stored bits through its own mask (docs/semantics.md §6)", frozenset({_B})),
    Convention("std-ddof0", Variant(std_ddof0=True), "the spread over repetitions is the population standard "
               "deviation (ddof = 0)", "std and the 95% interval use the sample standard deviation, ddof = 1 "
               "(docs/semantics.md §6)", frozenset({_B})),
]}


def combine(a: Variant, b: Variant) -> Optional[Variant]:
    """Both alternatives at once, or None when they set the same switch."""
    out = {}
    for f in fields(Variant):
        va, vb, d = getattr(a, f.name), getattr(b, f.name), f.default
        if va != d and vb != d:
            return None
        out[f.name] = va if va != d else vb
    return Variant(**out)
