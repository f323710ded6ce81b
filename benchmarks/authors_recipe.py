"""The paper authors' FC training recipe in PyTorch, imported into refbnn and measured the
same way as refbnn's own models: is the T-bar gap to the paper's Table III (a) the
training recipe? Needs torch (`pip install torch==2.13.0` takes a local CPU build here)
and onnx (the `import` extra).

    python benchmarks/authors_recipe.py --dataset fashion-mnist --sizes 8,16 --runs 5 --epochs 100
    python benchmarks/authors_recipe.py --dataset digits --sizes 8 --runs 2 --epochs 20     # a quick look

The recipe as myay/SPICE-Torch (`Models.FC`) and myay/BinarizedNeuralNetworks-Training
publish it: FC N,N with binarised weights (sign, straight-through estimator, no
effective weight clipping), batch norm, Hardtanh then sign as the activation, a
learnable output `Scale` starting at 1e-3, Adam (lr 1e-3), StepLR(25, 0.5), batch 128,
cross-entropy. The network sees x / Z. Each trained model is exported with
torch.onnx.export (without the output scale, which changes no prediction; one trained negative is
folded into the output weights),
imported with `refbnn import` and measured with `refbnn.metrics` at the paper's b values
(2, 4, ..., 64): T-bar overall and per layer, mean (min, max) over the runs. The
numbers to compare: refbnn's trainer gives T-bar 0.341 (fc-8) and 0.359 (fc-16) on
Fashion at BER 0 (docs/guides/reproduce.md), the paper 0.228 and 0.274.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np

import refbnn

PAPER_B = [2, 4, 8, 16, 32, 64]


def _torch():
    try:
        import torch
    except ImportError:
        raise SystemExit("authors_recipe: needs torch (pip install torch==2.13.0)") from None
    return torch


def recipe_model(torch, n_in: int, width: int, classes: int):
    nn, F = torch.nn, torch.nn.functional

    class SignSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

        @staticmethod
        def backward(ctx, g):
            return g

    class BinaryLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, SignSTE.apply(self.weight))

    class FC(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.bn1 = BinaryLinear(n_in, width, bias=False), nn.BatchNorm1d(width)
            self.fc2, self.bn2 = BinaryLinear(width, width, bias=False), nn.BatchNorm1d(width)
            self.fc3 = BinaryLinear(width, classes, bias=False)
            self.scale = nn.Parameter(torch.tensor(1e-3))      # the authors' learnable output Scale
            self.export_scores = False                          # True: leave the scale out (for export)

        def act(self, x):
            x = F.hardtanh(x)
            return x + (torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x)) - x).detach()

        def forward(self, x):
            x = self.act(self.bn1(self.fc1(torch.flatten(x, 1))))
            x = self.fc3(self.act(self.bn2(self.fc2(x))))
            return x if self.export_scores else x * self.scale

    return FC()


def train_one(torch, data, width: int, epochs: int, seed: int):
    torch.manual_seed(seed)
    net = recipe_model(torch, int(np.prod(data.x_train.shape[1:])), width, data.classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 25, 0.5)
    x = torch.tensor(data.x_train / data.Z, dtype=torch.float32)
    y = torch.tensor(data.y_train, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    net.eval()
    return net


def for_export(torch, net):
    """The scores without the output scale, which changes no prediction when positive; a
    scale trained negative is folded into the output weights (sign(-w) = -sign(w) for w != 0)."""
    with torch.no_grad():
        if net.scale.item() < 0:
            net.fc3.weight.neg_()
    net.export_scores = True
    return net


def to_refbnn(torch, net, data) -> refbnn.Model:
    path = os.path.join(tempfile.mkdtemp(), "recipe.onnx")
    u = torch.tensor(data.x_test[:2] / data.Z, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (u,), path, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "b"}})
    return refbnn.import_model(path, z=data.Z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--sizes", default="8,16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()
    torch = _torch()
    torch.set_num_threads(1)
    data = refbnn.load_dataset(args.dataset)
    x, y = data.x_test, data.y_test
    print(f"{args.dataset}, {args.epochs} epochs, {args.runs} runs per size; T-bar over b = 2, 4, ..., 64")
    for width in (int(s) for s in args.sizes.split(",")):
        rows = []
        for run in range(args.runs):
            net = train_one(torch, data, width, args.epochs, seed=run)
            with torch.no_grad():
                theirs = net(torch.tensor(x / data.Z, dtype=torch.float32)).argmax(1).numpy()
            model = to_refbnn(torch, for_export(torch, net), data)
            m = refbnn.metrics(model, x, y, b=PAPER_B)
            same = float((np.asarray(refbnn.api.FastEngine(model).predictions(x)) == theirs).mean())
            rows.append([float(m.T_bar)] + [float(lm.T_bar) for lm in m.layers])
            print(f"fc-{width} run {run}: accuracy {float(m.accuracy):.4f} (torch agrees on {same:.1%}), "
                  f"T-bar {rows[-1][0]:.3f}, per layer " + " / ".join(f"{v:.3f}" for v in rows[-1][1:]))
        a = np.array(rows)
        print(f"fc-{width}: T-bar {a[:, 0].mean():.3f} ({a[:, 0].min():.3f}, {a[:, 0].max():.3f}); per layer "
              + " / ".join(f"{v:.3f}" for v in a[:, 1:].mean(axis=0)))


if __name__ == "__main__":
    main()
