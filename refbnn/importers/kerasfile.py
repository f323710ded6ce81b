"""Reading a Keras / Larq model file's config and variables (docs/semantics.md §10.6),
in a child process under a time limit: libhdf5 can loop forever on a damaged file.
`refbnn.importers.keras` turns what this reads into steps."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import re
import tempfile
import zipfile

import numpy as np

from ..formats.files import InputError
from ..formats.npzfile import npz_arrays, npz_headers

MAX_WEIGHT_VALUES = 2**30          # refbnn's limit on one weight tensor (docs/semantics.md §3.3)
READ_TIMEOUT = 120                 # seconds for the child process that reads the HDF5 file


def _h5py(path: str):
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path}: reading a Keras file needs h5py: pip install 'refbnn[keras]'") from None
    return h5py


class KerasWeights:
    """The variables of each layer by name (`.h5`) or by position (`.keras`).

    libhdf5 can loop forever on a damaged file (seen on a vlen string attribute whose heap
    a flipped byte broke), and a C loop cannot be interrupted: so the file is read in a
    child process (`python -m refbnn.importers.kerasfile FILE OUT.npz`) under a time limit,
    which hands over the config and the arrays as an `.npz`, read back with refbnn's own
    checked reader. No pickle crosses."""

    def __init__(self, path: str, isolated: bool = True):
        _h5py(path)                                   # name the extra before anything else
        self.path = path
        self.by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
        if isolated:
            self._read_in_child()
        else:
            self._read()

    def _read_in_child(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "weights.npz")
            try:
                root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
                proc = subprocess.run([sys.executable, "-m", "refbnn.importers.kerasfile", self.path, out],
                                      capture_output=True, text=True, timeout=READ_TIMEOUT, env=env)
            except subprocess.TimeoutExpired:
                raise InputError(f"{self.path}: the HDF5 library did not finish reading the file in "
                                 f"{READ_TIMEOUT} s (a damaged file?)") from None
            if proc.returncode != 0:
                lines = [line for line in proc.stderr.splitlines() if line.strip()]
                raise InputError(lines[-1].removeprefix("refbnn-error: ") if lines and
                                 lines[-1].startswith("refbnn-error: ") else
                                 f"{self.path}: reading failed ({(lines or ['no message'])[-1][:160]})")
            headers = npz_headers(out, MAX_WEIGHT_VALUES * 8)
            arrays = npz_arrays(out, headers, headers)
        self.config = json.loads(arrays.pop("config").tobytes())
        index = json.loads(arrays.pop("index").tobytes())
        self.by_layer = {layer: [(name, arrays[key]) for name, key in vars_] for layer, vars_ in index.items()}

    def write(self, out: str) -> None:
        """Hand the config and the arrays to the parent process (see the class docstring)."""
        arrays, index = {}, {}
        for layer, vars_ in self.by_layer.items():
            index[layer] = []
            for name, a in vars_:
                key = f"a{len(arrays)}"
                arrays[key] = a
                index[layer].append([name, key])
        meta = {k: np.frombuffer(json.dumps(v).encode(), dtype=np.uint8) for k, v in
                (("config", self.config), ("index", index))}
        np.savez(out, **arrays, **meta)

    def _read(self) -> None:
        h5py, path = _h5py(self.path), self.path
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    self.config = json.loads(z.read("config.json"))
                    data = z.read("model.weights.h5")
                self._read_keras_v3(h5py.File(io.BytesIO(data), "r"), self.config)
            else:
                with h5py.File(path, "r") as f:
                    raw = f.attrs.get("model_config")
                    if raw is None:
                        raise InputError(f"{path}: an HDF5 file without a Keras model_config (weights only? save "
                                         "the whole model with model.save)")
                    self.config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                    self._read_h5(f)
        except InputError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError,
                zipfile.BadZipFile) as e:   # h5py reports a damaged file as any of these
            raise InputError(f"{path}: not a readable Keras file ({type(e).__name__}: {str(e)[:120]})") from None

    def _read_h5(self, f) -> None:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in root:
            names = root[layer].attrs.get("weight_names", [])
            self.by_layer[layer] = [(_var_name(n), self._array(root[layer][_decode(n)], layer)) for n in names]

    def _array(self, ds, layer: str) -> np.ndarray:
        """A weight array, its size checked from its header before it is read (a damaged or
        hostile file may declare any shape)."""
        shape = getattr(ds, "shape", None)
        if shape is None or getattr(ds, "dtype", None) is None or ds.dtype.kind not in "fiu":
            raise InputError(f"{self.path}: layer {layer!r}: a weight that is not a numeric array")
        if int(np.prod(shape, dtype=np.float64)) > MAX_WEIGHT_VALUES:
            raise InputError(f"{self.path}: layer {layer!r}: a weight of shape {list(shape)} exceeds "
                             f"{MAX_WEIGHT_VALUES} values")
        return np.asarray(ds)

    def _read_keras_v3(self, f, config: dict) -> None:
        # The weights file names each layer after its class, numbered per class in layer
        # order ('quant_conv2d', 'quant_conv2d_1', ...), not by the layer's own name.
        layers = f["layers"] if "layers" in f else f
        seen: dict[str, int] = {}
        for layer in config.get("config", {}).get("layers", []):
            if not isinstance(layer, dict) or layer.get("class_name") == "InputLayer":
                continue
            stem = _snake_case(str(layer.get("class_name", "")))
            key = stem if stem not in seen else f"{stem}_{seen[stem]}"
            seen[stem] = seen.get(stem, 0) + 1
            if key in layers:
                vars_ = layers[key]["vars"] if "vars" in layers[key] else {}
                name = str(layer.get("config", {}).get("name"))
                self.by_layer[name] = [(str(k), self._array(vars_[str(k)], name)) for k in sorted(map(int, vars_))]

    def of(self, layer: str, names: list[str], where: str) -> list[np.ndarray]:
        """The variables `names` of `layer` in that order (by name in `.h5`, else by position)."""
        have = self.by_layer.get(layer, [])
        if len(have) != len(names):
            raise InputError(f"{self.path}: {where}: {len(have)} weight arrays, expected {len(names)} "
                             f"({', '.join(names)})")
        if all(n.isdigit() for n, _ in have):
            return [a for _, a in have]
        found = dict(have)
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(f"{self.path}: {where}: no weight {missing[0]!r} (has {', '.join(found)})")
        return [found[n] for n in names]


def _snake_case(name: str) -> str:
    """Keras' name for a class in the weights file: 'QuantConv2D' -> 'quant_conv2d'."""
    s = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    s = re.sub("([a-z])([A-Z])", r"\1_\2", s).lower()
    return s if not s.startswith("_") else "private" + s


def _decode(n) -> str:
    return n.decode() if isinstance(n, bytes) else str(n)


def _var_name(n) -> str:
    """'quant_conv2d/kernel:0' -> 'kernel'."""
    return _decode(n).rsplit("/", 1)[-1].split(":")[0]


def _child(path: str, out: str) -> int:
    """The child process's work: read the file, write the `.npz`; a refusal goes to stderr."""
    try:
        KerasWeights(path, isolated=False).write(out)
    except InputError as e:
        print(f"refbnn-error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
