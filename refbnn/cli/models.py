"""Commands about model files: `example-model`, `inspect`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from tabulate import tabulate

from ..demo.bars import example_data, example_model
from ..formats.datafile import write_data
from ..formats.files import write_json
from ..formats.modelfile import read_model, write_model
from ..measure.metrics import describe_model
from .common import SEED, json_option
from .group import main


@main.command("example-model")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--inputs", default=200, show_default=True, type=click.IntRange(1, 10**6),
              help="Number of example images to write.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Seed of the image generator.")
@json_option
def example_model_cmd(outdir: str, inputs: int, seed: int, json_path: Optional[str]) -> None:
    """Write a hand-built bars model and data set: OUTDIR/example.json, OUTDIR/example.npz.

    The model tells horizontal from vertical bars in noisy 8x8 images (Z = 4):
    a conv layer of line detectors, a hidden layer of 4 units, 2 class scores.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = example_data(inputs, seed)
    write_model(out / "example.json", example_model())
    write_data(out / "example.npz", x, y)
    click.echo(f"wrote {out / 'example.json'} and {out / 'example.npz'} ({inputs} inputs)")
    if json_path:
        write_json(json_path, {"model": str(out / "example.json"), "data": str(out / "example.npz"),
                               "inputs": inputs, "seed": seed})


@main.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@json_option
def inspect_cmd(model_path: str, json_path: Optional[str]) -> None:
    """Show the layers of MODEL: shapes, neurons, weight bits, Z."""
    d = describe_model(read_model(model_path))
    click.echo(f"input shape {d['input']['shape']}, Z = {d['input']['Z']}; "
               f"{d['neurons']} neurons, {d['classes']} classes, {d['weight_bits']} weight bits")
    if "binarize" in d["input"]:
        b = d["input"]["binarize"]
        rules = ", ".join(f"x {'>' if p > 0 else '<='} {s}" for s, p in zip(b["thresholds"], b["polarity"]))
        click.echo(f"the input is binarised (+1 iff, per channel: {rules[:200]}); the first layer reads +-1 (eq. 1)")
    click.echo(tabulate([[i, l["type"], l["output_shape"], l["weight_bits"] or "", l["neurons"], l["notes"]]
                         for i, l in enumerate(d["layers"])],
                        headers=["#", "layer", "output shape", "weight bits", "neurons", "notes"]))
    if json_path:
        write_json(json_path, {"input": d["input"], "neurons": d["neurons"], "classes": d["classes"],
                               "layers": [{k: l[k] for k in ("type", "output_shape", "weight_bits")}
                                          for l in d["layers"]]})
