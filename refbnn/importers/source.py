"""Which kind of file a source is, and `import_model`, the one entry point (docs/semantics.md §10)."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..formats.files import InputError
from ..formats.npzfile import regular_file
from .fold import Imported, RefusedError, fold
from .inputs import parse_input_map

MAX_ONNX_BYTES = 2**31          # protobuf's own limit; larger models use external data


@dataclass
class Source:
    """What `check` needs to run the source again: its kind, the loaded graph or steps,
    and the input map u = a x + c."""

    path: str
    kind: str                    # "onnx", "qonnx", "keras", "state-dict"
    graph: object                # the onnx ModelProto, the Keras file's path, or the list of steps
    input_name: Optional[str]
    batch: Optional[int]         # a fixed batch size of the graph, None if dynamic
    input_a: np.ndarray
    input_c: np.ndarray
    input_layout: tuple[int, ...] = ()   # the graph's input axes as a permutation of [C, H, W] (NHWC: 1, 2, 0)


def source_kind(path: str) -> str:
    """"onnx", "keras" or "state-dict", from the file's first bytes (not its name)."""
    regular_file(path, MAX_ONNX_BYTES * 8)
    from .keras import is_keras
    if is_keras(path):
        return "keras"              # HDF5 (.h5), or a zip of config.json and weights (.keras)
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "state-dict"          # a torch zip file or an .npz: both are zip archives
    if head[:1] == b"\x80":
        return "state-dict"          # torch's legacy format starts with a pickle protocol byte
    from .statedict import is_safetensors
    if is_safetensors(path):
        return "state-dict"          # an 8-byte header length, then the JSON header
    return "onnx"


def _load_onnx(path: str):
    try:
        import onnx
    except ImportError:
        raise InputError(f"{path}: importing ONNX needs onnx: pip install 'refbnn[import]'") from None
    regular_file(path, MAX_ONNX_BYTES)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:   # protobuf's DecodeError and friends
        raise InputError(f"{path}: not an ONNX file ({type(e).__name__}: {str(e)[:120]})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no graph nodes)")
    _load_external_data(model, path)
    return model


def _load_external_data(model, path: str) -> None:
    """Read the weights that an exporter saved beside the graph (`net.onnx.data`, as the
    dynamo exporter does), only from regular files in the graph's own directory."""
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_model

    base = os.path.dirname(os.path.abspath(path))
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for t in external:
        location = {e.key: e.value for e in t.external_data}.get("location", "")
        if not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
            raise InputError(f"{path}: initializer {t.name!r}: external data at {location[:80]!r} is not a file "
                             "beside the graph")
        regular_file(os.path.join(base, location), MAX_ONNX_BYTES * 8)
    if external:
        try:
            load_external_data_for_model(model, base)
        except Exception as e:   # a truncated or missing data file
            raise InputError(f"{path}: cannot read its external data ({type(e).__name__}: {str(e)[:120]})") from None


def import_model(path: str | os.PathLike, *, z: Optional[int] = None, input_map: str = "x/Z",
                 input_shape: Optional[Sequence[int]] = None, layout: Optional[str] = None) -> Imported:
    """The refbnn model of an ONNX/QONNX file, a Keras/Larq file, or a state dict with its
    `layout` file.

    `z`: the input range Z (required unless the layout gives it); `input_map`: how the
    source's float input is made from the integer data (docs/semantics.md §10.2);
    `input_shape`: [C, H, W] or [K] where the file does not say.
    Raises InputError (a RefusedError for what refbnn cannot represent), naming the
    file and the node, key or step."""
    path = os.fspath(path)
    kind = source_kind(path)
    shape = tuple(input_shape) if input_shape else None
    if kind == "onnx":
        if layout is not None:
            raise InputError(f"--layout: {path} is an ONNX file; a layout is only for state dicts")
        from .onnxgraph import read_graph

        proto = _load_onnx(path)
        try:
            graph = read_graph(proto, shape)
        except RefusedError as e:
            raise RefusedError(f"{path}: {e}") from None
        steps, shape, output = graph.steps, graph.input_shape, graph.output_name
        kind = "qonnx" if graph.qonnx else "onnx"
        source = Source(path, kind, proto, graph.input_name, graph.batch, None, None, graph.input_layout)
    elif kind == "keras":
        if layout is not None:
            raise InputError(f"--layout: {path} is a Keras file; a layout is only for state dicts")
        from .keras import read_keras

        steps, file_shape, channels_last = read_keras(path)
        shape = shape or file_shape
        output = None
        source = Source(path, kind, path, None, None, None, None, (1, 2, 0) if channels_last else ())
    else:
        from .statedict import Layout, layout_steps, read_state_dict

        if layout is None:
            raise InputError(f"{path}: a state dict does not record the order of its layers: give --layout "
                             "LAYOUT.json (docs/semantics.md §10.4)")
        lay = Layout(layout)
        steps = layout_steps(read_state_dict(path), lay, path)
        shape = shape or lay.input_shape
        z = z if z is not None else lay.z
        output = None
        if shape is None:
            raise InputError(f"{layout}: input.shape: the state dict does not say it: give it here or "
                             "--input-shape")
        source = Source(path, kind, steps, None, None, None, None)
    if z is None:
        raise InputError(f"{path}: the input range Z is not in the file: give --z (255 for 8-bit images, "
                         "16 for the scikit-learn digits)")
    try:
        a, c = parse_input_map(input_map, z, shape[0])
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        imported = fold(steps, shape, z, a, c, output)
    except RefusedError as e:
        raise RefusedError(f"{path}: {e}") from None
    source.input_a, source.input_c = a, c
    imported.source = source
    return imported
