"""Benchmark of the NumPy trainer against PyTorch on the CPU. Prints ratios from one run.

    python benchmarks/train.py [--steps 40] [--arch fashion-fc] [--train-ber 0.0] [--rounds 3] [--one-core]
    python benchmarks/train.py --threads [--arch cnn-32]

Random data of Fashion-MNIST's shape (1x28x28, values 0..255). Both sides run the
same network (binarised weights with a straight-through estimator, 3x3 convolutions
with padding 1 and 2x2 max pooling before batch norm for the CNNs, batch norm,
hardtanh + sign, scaled output, cross-entropy, Adam, batch 128) for the same number
of steps, taking turns of 8 steps (timings on a shared machine move by a third from
minute to minute; turns make a slow spell hit both alike); the ratio is NumPy time /
PyTorch time per step (equal to the epoch-time ratio), printed for each of --rounds
rounds, each on fresh networks, with their median. With --one-core both sides run on
one thread (threadpoolctl for NumPy's BLAS, torch.set_num_threads(1)), as the experiment
runner trains: one cell per core. Needs torch (`pip install
torch==2.13.0` takes a local CPU build here); without it, only the NumPy time is printed.

With --threads, NumPy alone: forward and backward passes (no optimizer step) under four
thread settings (BLAS on all cores or one, crossed with the element-wise pieces of
`over_batch` on one thread or two), taking turns of 4 steps for 12 rounds in one
process, and each setting's median against the default's (BLAS on all cores, pieces on
one). Needs threadpoolctl.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Callable, Optional

import numpy as np

from refbnn.training.architectures import parse_arch
from refbnn.training.datasets import DataSplit
from refbnn.training.trainer import TrainConfig, Trainer

BLOCK = 8     # steps each side takes in turn


def interleaved(arch: str, x, y, ber: float, other: Optional[Callable[[int], None]]) -> tuple[float, float]:
    """Seconds per step of one NumPy epoch over x and, with `other` (a step of PyTorch),
    of as many PyTorch steps: the two take turns, BLOCK steps each, so that a slow spell
    of the machine hits both alike. The first step of each turn is not counted: it
    absorbs the hand-over (each library's idle threads spin for a while after its last
    call, and steps taken one by one in turns made PyTorch's twice as slow) and, in the
    first turn, the allocation of the work buffers (an epoch has 469 steps)."""
    data = DataSplit(x, y, x[:128], y[:128], 255, 10, "random")
    trainer = Trainer(TrainConfig(arch, epochs=1, batch_size=128, train_ber=ber), data)
    trainer.evaluate = lambda *a: 0.0            # time the training steps only
    spent, counted = {"numpy": 0.0, "other": 0.0}, {"numpy": 0, "other": 0}
    mark = [0.0]

    def after_step(done: int, total: int) -> None:
        if done % BLOCK != 1:
            spent["numpy"] += time.perf_counter() - mark[0]
            counted["numpy"] += 1
        if other is not None and done % BLOCK == 0:
            for k in range(done - BLOCK, done):
                t = time.perf_counter()
                other(k)
                if k > done - BLOCK:
                    spent["other"] += time.perf_counter() - t
                    counted["other"] += 1
        mark[0] = time.perf_counter()

    trainer.train_epoch(after_step)
    return spent["numpy"] / counted["numpy"], spent["other"] / max(counted["other"], 1)   # (0: no other)


def thread_settings(arch: str, rounds: int = 12, turn: int = 4) -> None:
    """Print the median time of a forward and backward pass under each (BLAS threads, piece
    threads) setting, measured in turns within one process (docs/training.md, "Speed")."""
    from threadpoolctl import threadpool_limits  # scikit-learn brings it

    from refbnn.training import nn
    from refbnn.training.architectures import Network

    rng = np.random.default_rng(0)
    net = Network(arch, (1, 28, 28), 10, 0)
    x = (rng.integers(0, 256, (128, 1, 28, 28)) / 255).astype(np.float32)
    y = rng.integers(0, 10, 128)

    def step() -> None:
        _, grad = nn.softmax_cross_entropy(net.forward(x, True), y)
        net.backward(grad)

    settings = [(None, 1), (1, 1), (None, 2), (1, 2)]    # (BLAS threads: None = all, piece threads)
    times: dict = {s: [] for s in settings}
    saved = nn.THREADS
    try:
        for _ in range(rounds):
            for blas, pieces in settings:
                with threadpool_limits(blas):
                    nn.THREADS = pieces
                    step()                               # the hand-over, not counted
                    for _ in range(turn):
                        t = time.perf_counter()
                        step()
                        times[(blas, pieces)].append(time.perf_counter() - t)
    finally:
        nn.THREADS = saved
    default = float(np.median(times[settings[0]]))
    for (blas, pieces), ts in times.items():
        med = float(np.median(ts))
        print(f"{arch}: BLAS on {'all cores' if blas is None else 'one thread'}, pieces on "
              f"{pieces} thread{'s' if pieces > 1 else ''}: {med * 1000:.1f} ms forward and backward, "
              f"{med / default:.2f}x the default")


def gemm_floor(arch: str, repeat: int = 5) -> float:
    """Seconds per step of the trainer's matrix products alone (forward, weight gradient and,
    past the first layer, input gradient of every weight layer), on random float32 data
    of the same shapes: what NumPy's BLAS costs before any other pass over the tensors."""
    rng = np.random.default_rng(1)
    convs, fcs = parse_arch(arch)
    shapes, c, side = [], 1, 28                # (rows, fan-in, outputs, taps of the input gradient)
    for k, token in enumerate(convs):
        if token == "mp":
            continue
        shapes.append((128 * side * side, 9 * c, token, 9 if shapes else 0))
        side //= 2 if k + 1 < len(convs) and convs[k + 1] == "mp" else 1
        c = token
    n = c * side * side
    for width in fcs + [10]:
        shapes.append((128, n, width, 1 if shapes else 0))
        n = width
    work = []
    for m, f, o, taps in shapes:
        x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((m, f), (o, f), (m, o)))
        work.append((x, w, dy, taps, w[:, :f // max(taps, 1)]))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for x, w, dy, taps, tap in work:
            x @ w.T
            dy.T @ x
            for _ in range(taps):
                dy @ tap
        best = min(best, time.perf_counter() - t)
    return best


def torch_step(arch: str, x, y, ber: float) -> Callable[[int], None]:
    """A function that runs PyTorch's training step k (batch k of x) on a fresh network."""
    import torch
    from torch import nn

    class Sign(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            return torch.where(v > 0, 1.0, -1.0)

        @staticmethod
        def backward(ctx, g):
            return g

    def signs(w):
        wb = Sign.apply(w)
        if ber > 0:
            wb = wb * torch.where(torch.rand_like(wb) < ber, -1.0, 1.0)
        return wb

    class BinLinear(nn.Linear):
        def forward(self, v):
            return nn.functional.linear(v, signs(self.weight))

    class BinConv(nn.Conv2d):
        def forward(self, v):
            return nn.functional.conv2d(v, signs(self.weight), padding=1)

    class Act(nn.Module):
        def forward(self, v):
            return Sign.apply(nn.functional.hardtanh(v))

    convs, fcs = parse_arch(arch)
    layers, c, side = [], 1, 28
    for k, token in enumerate(convs):          # refbnn's default order: conv -> pool -> BN -> sign
        if token == "mp":
            continue
        layers.append(BinConv(c, token, 3, padding=1, bias=False))
        if k + 1 < len(convs) and convs[k + 1] == "mp":
            layers.append(nn.MaxPool2d(2))
            side //= 2
        layers += [nn.BatchNorm2d(token), Act()]
        c = token
    layers.append(nn.Flatten())
    n = c * side * side
    for width in fcs:
        layers += [BinLinear(n, width, bias=False), nn.BatchNorm1d(width), Act()]
        n = width
    layers.append(BinLinear(n, 10, bias=False))
    net = nn.Sequential(*layers)
    scale = nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.Adam(list(net.parameters()) + [scale], lr=1e-3)
    xt = torch.tensor(x / 255.0, dtype=torch.float32)
    yt = torch.tensor(y)

    def step(k: int) -> None:
        xb, yb = xt[k * 128:(k + 1) * 128], yt[k * 128:(k + 1) * 128]
        loss = nn.functional.cross_entropy(net(xb) * scale.exp(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in net:
                if isinstance(m, (BinLinear, BinConv)):
                    m.weight.clamp_(-1, 1)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--arch", default="fashion-fc")
    ap.add_argument("--train-ber", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one-core", action="store_true",
                    help="both sides on one thread, as the experiment runner's cells")
    ap.add_argument("--threads", action="store_true",
                    help="NumPy only: compare thread settings for the BLAS and the element-wise pieces")
    args = ap.parse_args()
    if args.threads:
        thread_settings(args.arch)
        return
    if args.steps < 2 * BLOCK:
        ap.error(f"--steps: at least {2 * BLOCK} (two turns of {BLOCK} steps each side)")
    if args.one_core:
        from threadpoolctl import threadpool_limits  # scikit-learn brings it
        threadpool_limits(1)
        if importlib.util.find_spec("torch") is not None:
            import torch
            torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 128 * args.steps
    x = rng.integers(0, 256, (n, 1, 28, 28))
    y = rng.integers(0, 10, n)
    has_torch = importlib.util.find_spec("torch") is not None
    t_np, t_torch = [], []
    for _ in range(args.rounds):
        other = torch_step(args.arch, x, y, args.train_ber) if has_torch else None
        a, b = interleaved(args.arch, x, y, args.train_ber, other)
        t_np.append(a)
        t_torch.append(b)
    t_gemm = gemm_floor(args.arch)
    numpy_s = float(np.median(t_np))
    cores = ", one core" if args.one_core else ""
    print(f"{args.arch}, train BER {args.train_ber}{cores}: NumPy {numpy_s * 1000:.1f} ms per step "
          f"({numpy_s * 469:.1f} s per Fashion-MNIST epoch of 469 steps); its matrix products "
          f"alone {t_gemm / numpy_s:.0%} of it")
    if not has_torch:
        print("torch not installed: no ratio")
        return
    ratios = sorted(a / b for a, b in zip(t_np, t_torch))
    torch_s = float(np.median(t_torch))
    print(f"PyTorch {torch_s * 1000:.1f} ms per step; NumPy / PyTorch time per step, round by round: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)} (median {np.median(ratios):.2f}x; target <= 1.2x); "
          f"NumPy's matrix products alone / PyTorch's whole step: {t_gemm / torch_s:.2f}x")

if __name__ == "__main__":
    main()
