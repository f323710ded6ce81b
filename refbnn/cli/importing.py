"""The command that brings models in from other frameworks: `import`."""
from __future__ import annotations

import sys
from typing import Optional

import click
from tabulate import tabulate

from ..formats.datafile import read_data
from ..formats.files import write_json
from ..formats.modelfile import write_model
from ..importers import import_model
from ..importers.check import check
from ..importers.inputs import FORMS
from .common import Progress, json_option, writable
from .group import main

MAX_LINES = 10     # explained / unexplained disagreements shown


def _shape(ctx, param, value) -> Optional[tuple[int, ...]]:
    if value is None:
        return None
    try:
        dims = tuple(int(t) for t in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected C,H,W or K (comma-separated integers)") from None
    if len(dims) not in (1, 3) or min(dims) < 1 or max(dims) > 2**16:
        raise click.BadParameter(f"{value!r}: expected C,H,W or K, each in 1..65536")
    return dims


@main.command("import", short_help="Import an ONNX / QONNX graph, a Keras/Larq file or a PyTorch state dict.")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), callback=writable,
              help="The refbnn model file to write (JSON).")
@click.option("--z", "z", type=click.IntRange(1, 2**20), default=None,
              help="The input range Z: the data are integers with |x| <= Z (255 for 8-bit images).")
@click.option("--input", "input_map", default="x/Z", show_default=True,
              help="How the source's float input is made from the integer data x: "
                   f"{', '.join(FORMS)} (M, S: numbers or per-channel [m0,m1,m2]).")
@click.option("--input-shape", callback=_shape, default=None,
              help="C,H,W (or K) where the file does not say it.")
@click.option("--layout", type=click.Path(dir_okay=False), default=None,
              help="For a state dict: the JSON layout naming the steps in forward order.")
@click.option("--check", "check_path", type=click.Path(dir_okay=False), default=None,
              help="A refbnn data file (.npz): run the source in its own runtime on it and compare "
                   "signs and predictions with refbnn; exit 1 on a disagreement that is not a float tie.")
@json_option
def import_cmd(source, output, z, input_map, input_shape, layout, check_path, json_path) -> None:
    """Import SOURCE as a refbnn model (docs/semantics.md §10).

    SOURCE is an ONNX file (torch.onnx.export, either exporter; tf2onnx's NHWC
    graphs), a QONNX file (Brevitas export_qonnx, the FINN model zoo:
    BipolarQuant, 1-bit Quant, MultiThreshold), a Keras/Larq model file (.h5,
    .keras; read with h5py, no TensorFlow), or a PyTorch state dict (.pt, .pth
    read without torch and without unpickling; .npz; .safetensors) with
    --layout. Batch norm, biases and the input map fold exactly into integer
    thresholds with polarity; a sign on the input becomes the model's input
    binarisation. Anything refbnn cannot represent exactly is refused, naming
    the node or layer and why. Thresholds within float rounding of an integer
    (float ties) are reported. The model and the data keep [C, H, W], also for
    NHWC sources.

    \b
    Examples:
      refbnn import net.onnx --z 255 -o net.json --check test.npz
      refbnn import net.onnx --z 255 --input '(x/Z-0.1307)/0.3081' -o net.json
      refbnn import larq_model.h5 --z 255 --input x -o net.json
      refbnn import tfc_w1a1.onnx --z 255 -o tfc.json       # FINN zoo: binarises its input
      refbnn import net.pt --layout layout.json -o net.json
    """
    imported = import_model(source, z=z, input_map=input_map, input_shape=input_shape, layout=layout)
    model = imported.model
    click.echo(f"{source}: {imported.source.kind}, input shape {list(model.input_shape)}, Z = {model.Z}; "
               f"{len(model.layers)} layers, {model.neurons} neurons, {model.classes} classes")
    for note in imported.notes:
        click.echo(f"note: {note}")
    result = {"source": source, "kind": imported.source.kind, "model": output, "notes": imported.notes}
    failed = False
    if check_path:
        data = read_data(check_path, model)
        with Progress("check") as progress:
            report = check(imported, data.x, progress=progress)
        _print_check(report)
        result["check"] = {"data": check_path, "inputs": report.inputs,
                           "predictions_agree": report.predictions_agree,
                           "layers": [vars(a) for a in report.layers],
                           "explained": report.explained, "unexplained": report.unexplained, "ok": report.ok}
        failed = not report.ok
    write_model(output, model)
    click.echo(f"wrote {output}")
    if json_path:
        write_json(json_path, result)
    if failed:
        sys.exit(1)


def _print_check(report) -> None:
    click.echo(f"check: predictions agree on {report.predictions_agree} of {report.inputs} inputs")
    if report.layers:
        click.echo(tabulate([[a.layer, a.tensor, a.entries, a.differ, a.explained] for a in report.layers],
                            headers=["threshold layer", "source tensor", "signs", "differ", "float ties"]))
    for title, lines in (("explained (float ties)", report.explained), ("UNEXPLAINED", report.unexplained)):
        if lines:
            click.echo(f"{title}: {len(lines)} input(s)")
            for line in lines[:MAX_LINES]:
                click.echo(f"  {line}")
            if len(lines) > MAX_LINES:
                click.echo(f"  ... and {len(lines) - MAX_LINES} more (all in --json)")
    click.echo("check: OK" if report.ok else "check: FAILED (disagreements that are not float ties)")
