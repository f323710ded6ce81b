"""Bring BNNs in from other frameworks: ONNX, QONNX (Brevitas, FINN) and PyTorch state
dicts (docs/semantics.md §10).

    from refbnn.importers import import_model
    imported = import_model("net.onnx", z=255)          # input fed as x / 255
    imported.model                                     # a refbnn Model
    imported.notes                                     # float ties, constant channels, ...

Each source is read into a list of float steps (`steps`), which `fold` turns into
the integer model exactly or refuses with the node it cannot represent. `check`
runs the source in its own runtime and compares it with refbnn.
"""
from .fold import Imported, RefusedError, fold
from .source import import_model, source_kind

__all__ = ["Imported", "RefusedError", "fold", "import_model", "source_kind"]
