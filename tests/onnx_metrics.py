"""An implementation that is handed its model as ONNX (`--format onnx`): it reads the graph
back with refbnn's importer (the request says the input map and Z) and answers with the
float implementation of examples/. tests/test_export.py runs fuzz and the suite on it.

    python tests/onnx_metrics.py MODEL.onnx DATA REQUEST CLAIMS
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from independent_metrics import answer  # noqa: E402

from refbnn.formats.modelfile import model_to_dict  # noqa: E402
from refbnn.importers import import_model  # noqa: E402

if __name__ == "__main__":
    model, data, request, claims = sys.argv[1:]
    given = json.loads(Path(request).read_text())["onnx"]
    answer(model_to_dict(import_model(model, z=given["Z"], input_map=given["input"]).model), data, request, claims)
