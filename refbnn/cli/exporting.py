"""The command that lets models leave: `export` (docs/semantics.md §13)."""
from __future__ import annotations

import json
import sys

import click

from ..formats.datafile import read_data
from ..formats.files import check_writable, write_json
from ..formats.modelfile import model_to_dict, read_model
from ..importers.inputs import FORMS
from .common import Progress, json_option, require, writable
from .group import main

FORMATS = ("onnx", "qonnx", "npz", "safetensors", "pt")


@main.command("export", short_help="Write a refbnn model as ONNX, or as a state dict with its layout.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True,
              help="The format to write.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), callback=writable,
              help="The file to write.")
@click.option("--input", "input_map", default="x/Z", show_default=True,
              help=f"What the graph reads, made from the integer data x: one of {', '.join(FORMS)} (as "
                   "`refbnn import --input`).")
@click.option("--check", "check_path", type=click.Path(dir_okay=False), default=None,
              help="A data file: import the written file back (it must be MODEL again), run it in its runtime "
                   "(onnxruntime; the QONNX executor; torch for a state dict, where installed) and compare every prediction and "
                   "every threshold layer's signs with refbnn; exit 1 on any difference.")
@json_option
def export_cmd(model_path, fmt, output, input_map, check_path, json_path) -> None:
    """Write MODEL as a standard ONNX graph (opset 17) that reads the input map of the
    data and outputs the class scores, the same in FINN's QONNX dialect (BipolarQuant
    weights, MultiThreshold activations), or as a state dict (npz, safetensors) with
    its layout file beside it (OUT's stem + .layout.json; pt needs torch and is
    written by torch.save). From Python, refbnn.export.to_torch(model) gives a
    torch.nn.Module with refbnn's scores.

    \b
    Examples:
      refbnn export net.json --to onnx -o net.onnx --check test.npz
      refbnn export net.json --to qonnx -o net.qonnx.onnx --check test.npz
      refbnn export net.json --to safetensors -o net.safetensors

    Every float decision of the graph is placed where float rounding cannot move it:
    the input is rounded back to the integers x, the sums are integers float32 holds
    exactly, and each threshold compares with s + 1/2 in double (docs/semantics.md
    §13). `refbnn import` of the file gives back MODEL unchanged. Exit 0 on success,
    1 when --check finds a difference, 2 on bad input (or a model the format cannot
    hold exactly, with the reason)."""
    from ..export.onnx import input_map_of

    model = read_model(model_path)
    a, b = input_map_of(input_map, model)
    data = read_data(check_path, model) if check_path else None     # bad data: exit 2 before anything is written
    result = {"model": model_path, "to": fmt, "output": output, "input": input_map}
    layout = None
    if fmt in ("onnx", "qonnx"):
        require("onnx", f"export to {fmt}", "import")
        from ..export.onnx import write_onnx
        write_onnx(output, model, a, b, qonnx=fmt == "qonnx")
    else:
        from ..export.statedict import layout_path, write_state_dict
        check_writable(str(layout_path(output)), "--output")      # the layout goes beside OUT
        if fmt == "pt":
            require("torch", "export to pt", "torch")
        layout = str(write_state_dict(output, fmt, model, a, b))
        result["layout"] = layout
    click.echo(f"export: {model_path} -> {output}{f' and {layout}' if layout else ''} ({fmt}, input {input_map})")
    failed = False
    if check_path:
        failed = _check(model, output, layout, input_map, data, check_path, result)
    if json_path:
        write_json(json_path, result)
    sys.exit(1 if failed else 0)


def _check(model, output, layout, input_map, data, data_path, result) -> bool:
    """Import the written file back (it must be MODEL again) and run it in its runtime."""
    from ..importers import import_model
    from ..importers.check import check

    imported = import_model(output, z=model.Z, input_map=input_map, layout=layout)
    same = json.dumps(model_to_dict(imported.model)) == json.dumps(model_to_dict(model))
    if layout is not None:
        try:
            import torch  # noqa: F401  (a state dict's runtime)
        except ImportError:
            click.echo(f"check: import gives back {'the same model' if same else 'ANOTHER MODEL'}; not run in "
                       "torch (not installed: pip install 'refbnn[torch]')")
            result["check"] = {"data": data_path, "same_model": same, "runtime": None}
            return not same
    with Progress("check") as progress:
        report = check(imported, data.x, progress=progress)
    differ = sum(layer.differ for layer in report.layers)
    click.echo(f"check: import gives back {'the same model' if same else 'ANOTHER MODEL'}; predictions "
               f"{report.predictions_agree} of {report.inputs} agree; threshold signs: {differ} differ "
               f"in {len(report.layers)} layers")
    result["check"] = {"data": data_path, "same_model": same, "inputs": report.inputs,
                       "predictions_agree": report.predictions_agree,
                       "layers": [{"layer": layer.layer, "entries": layer.entries, "differ": layer.differ}
                                  for layer in report.layers]}
    return not same or report.predictions_agree != report.inputs or differ > 0
