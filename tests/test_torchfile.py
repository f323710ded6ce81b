"""PyTorch `.pt` files read without torch and without unpickling (refbnn/importers/torchfile.py).

`tests/data/checkpoint.pt` was written by torch 2.13 (`torch.save`) from:

    state = {"fc.weight": torch.arange(12.0).reshape(3, 4) - 5.5,
             "fc.weight_t": (torch.arange(12.0).reshape(3, 4) - 5.5).t(),     # a view, stride (1, 4)
             "half": torch.tensor([1.5, -0.25, 2.0], dtype=torch.float16),
             "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
             "double": torch.tensor([0.1], dtype=torch.float64),
             "param": torch.nn.Parameter(torch.tensor([3.0, -3.0])),
             "bn.num_batches_tracked": torch.tensor(7)}
    torch.save({"state_dict": state, "epoch": 12}, "tests/data/checkpoint.pt")

so the expected values below are those expressions; where torch is installed, the same
file and freshly saved random ones are also compared with `torch.load`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_zip

from refbnn.formats.files import InputError
from refbnn.importers.statedict import read_state_dict
from refbnn.importers.torchfile import read_torch_file

CHECKPOINT = Path(__file__).parent / "data" / "checkpoint.pt"


def test_a_checkpoint_written_by_torch_reads_value_for_value():
    obj = read_torch_file(str(CHECKPOINT), 2**20)
    assert obj["epoch"] == 12
    sd = obj["state_dict"]
    w = np.arange(12.0).reshape(3, 4) - 5.5
    assert np.array_equal(sd["fc.weight"], w) and sd["fc.weight"].dtype == np.float64
    assert np.array_equal(sd["fc.weight_t"], w.T)              # the strided view, materialised
    assert list(sd["half"]) == [1.5, -0.25, 2.0]                # exact in float16
    assert list(sd["bf16"]) == [1.5, -2.0]                      # exact in bfloat16
    assert list(sd["double"]) == [0.1]                          # float64 kept bit for bit
    assert list(sd["param"]) == [3.0, -3.0]                     # an nn.Parameter is its tensor
    assert sd["bn.num_batches_tracked"].dtype == np.int64 and int(sd["bn.num_batches_tracked"]) == 7


def test_the_state_dict_path_unwraps_the_checkpoint():
    """read_state_dict (the importer's entry) takes the wrapped state dict without torch."""
    sd = read_state_dict(str(CHECKPOINT))
    assert sorted(sd) == sorted(["fc.weight", "fc.weight_t", "half", "bf16", "double", "param",
                                 "bn.num_batches_tracked"])


# Hand-assembled pickles (protocol 2 opcodes), the shapes of known attacks.
SYSTEM_CALL = b"\x80\x02cposix\nsystem\nq\x00X\x0f\x00\x00\x00touch PWNED.txtq\x01\x85q\x02Rq\x03."
BUILTIN_EVAL = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x01\x85R."
INST_OPCODE = b"\x80\x02(X\x04\x00\x00\x00echoios\nsystem\n."          # INST: import and call by name
TORCH_BUT_NOT_ALLOWED = b"\x80\x02ctorch\nload\nX\x01\x00\x00\x00x\x85R."


@pytest.mark.parametrize("pkl,message", [
    (SYSTEM_CALL, "refused global posix.system"),
    (BUILTIN_EVAL, "refused global builtins.eval"),
    (INST_OPCODE, "refused opcode b'i'"),
    (TORCH_BUT_NOT_ALLOWED, "refused global torch.load"),
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "data.pkl ends early"),
])
def test_a_malicious_or_damaged_pickle_is_refused_and_nothing_runs(pkl, message, tmp_path, monkeypatch):
    """Property: a pickle naming anything but the state dict's own names, or using an opcode
    that imports or calls by name, is refused before anything is imported or called."""
    monkeypatch.chdir(tmp_path)
    path = torch_zip(tmp_path / "evil.pt", pkl)
    with pytest.raises(InputError) as e:
        read_state_dict(path)
    assert message in str(e.value) and "evil.pt" in str(e.value)
    assert not os.path.exists(tmp_path / "PWNED.txt")


def test_a_tensor_view_past_its_storage_is_refused(tmp_path):
    """_rebuild_tensor_v2 with a size that reaches past the storage's 2 values."""
    pkl = (b"\x80\x02}(X\x01\x00\x00\x00w"
           b"ctorch._utils\n_rebuild_tensor_v2\n"
           b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ"
           b"K\x00K\x05\x85K\x01\x85\x89}tR" b"u.")
    path = torch_zip(tmp_path / "evil.pt", pkl, {"0": np.array([1.0, 2.0], "<f4").tobytes()})
    with pytest.raises(InputError, match="reaching past its 2 values"):
        read_torch_file(path, 2**20)


def test_torch_agrees_on_the_fixture_and_on_fresh_random_state_dicts(tmp_path):
    """Cross-check with torch where installed: torch.load(weights_only=True) and refbnn's
    reader give the same arrays (and torch, too, refuses the system-call pickle)."""
    torch = pytest.importorskip("torch")
    theirs = torch.load(CHECKPOINT, weights_only=True)["state_dict"]
    ours = read_torch_file(str(CHECKPOINT), 2**20)["state_dict"]
    for k, v in theirs.items():
        want = v.detach().to(torch.float64).numpy() if v.is_floating_point() else v.numpy()
        assert np.array_equal(ours[k], want), k
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 9, 3))
        for p in net.parameters():
            p.data = torch.randn(p.shape, generator=gen)
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        (tmp_path / f"n{trial}.pt").write_bytes(buf.getvalue())
        ours = read_state_dict(str(tmp_path / f"n{trial}.pt"))
        for k, v in net.state_dict().items():
            assert np.array_equal(ours[k], v.double().numpy() if v.is_floating_point() else v.numpy()), k
    with pytest.raises(Exception):
        torch.load(torch_zip(tmp_path / "evil.pt", SYSTEM_CALL), weights_only=True)
