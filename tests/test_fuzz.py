"""Fuzzing every input refbnn reads: each malformed file or option value gets exit code 2
and one bounded line naming the file or option, never a traceback (exit 3), a hang or an
out-of-memory kill; valid-but-odd inputs may also succeed (0) or fail a check (1).

In-process (CliRunner) for the Hypothesis campaigns; in a subprocess with a memory cap
and a timeout for the hostile files (FIFOs, /dev/zero, zip bombs, huge declared shapes,
deep nesting), where a hang or an allocation would otherwise take the test run down.
"""
import base64
import io
import json
import os
import resource
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_clean_exit, damaged, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refbnn.cli import main
from refbnn.demo.bars import example_data, example_model
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import model_to_dict, write_model
from refbnn.semantics.model import Linear, Model, Threshold, Weight

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid model, data set, masks file, claims file and training checkpoint."""
    d = tmp_path_factory.mktemp("valid")
    write_model(d / "m.json", example_model())
    x, y = example_data(12)
    write_data(d / "d.npz", x, y)
    runner = CliRunner()
    assert runner.invoke(main, ["masks", str(d / "m.json"), "--ber", "0.1", "--inputs", "12",
                                "--batch-size", "4", "-o", str(d / "k.npz")]).exit_code == 0
    assert runner.invoke(main, ["metrics", str(d / "m.json"), str(d / "d.npz"), "--json",
                                str(d / "c.json")]).exit_code == 0
    return d


@FUZZ
@given(st.data())
def test_damaged_model_files(valid, tmp_path, data):
    """Property: any damage to a model file gives exit 0 or 2 (one line), never a crash."""
    path = tmp_path / "m.json"
    path.write_bytes(damaged((valid / "m.json").read_bytes(), data))
    assert_clean_exit(run_cli("inspect", path))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@FUZZ
@given(st.data(), JSON)
def test_structurally_wrong_model_documents(valid, tmp_path, data, value):
    """Property: replacing any one field of a valid model document by any JSON value gives
    exit 0 or 2, never a crash (types, lists for strings, objects for numbers...)."""
    doc = model_to_dict(example_model())
    paths = [("format",), ("version",), ("input",), ("input", "shape"), ("input", "Z"), ("layers",)]
    paths += [("layers", i, k) for i, layer in enumerate(doc["layers"]) for k in layer]
    where = data.draw(st.sampled_from(paths))
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    assert_clean_exit(run_cli("inspect", path))


DAMAGED = {   # file -> the command that reads it (with the other files valid)
    "d.npz": lambda v, p: ("metrics", v / "m.json", p),
    "k.npz": lambda v, p: ("eval", v / "m.json", v / "d.npz", "--masks", p),
    "c.json": lambda v, p: ("verify", v / "m.json", v / "d.npz", "--claims", p),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
@FUZZ
@given(data=st.data())
def test_damaged_data_mask_and_claims_files(valid, tmp_path, name, data):
    """Property: any damage to a data, mask or claims file gives exit 0, 1 or 2 (one line)."""
    path = tmp_path / name
    path.write_bytes(damaged((valid / name).read_bytes(), data))
    assert_clean_exit(run_cli(*DAMAGED[name](valid, path)))


@FUZZ
@given(st.sampled_from(["--b", "--ber", "--k", "--layers", "--seed", "--batch-size", "--reps"]),
       st.text(max_size=30) | st.sampled_from(["1e999999999", "1e-999999999", "1e400", "-1", "nan", "inf",
                                               "²", "1/0", "2" * 5000, "", ",", "0x10", "1_000"]))
def test_option_values(valid, option, value):
    """Property: any value of any numeric option gives exit 0, 1 or 2 (one line), never a crash."""
    command = {"--b": "metrics", "--k": "certify"}.get(option, "eval")
    extra = ["--reps", "1"] if command == "eval" and option != "--reps" else []
    assert_clean_exit(run_cli(command, valid / "m.json", valid / "d.npz", option, value, *extra))


@FUZZ
@given(st.data())
def test_damaged_checkpoints(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("ck")
    args = ["train", "--arch", "fc:4", "--epochs", "1", "-o", str(d / "m.json"), "--checkpoint", str(d / "ck.npz")]
    if not (d / "good.npz").exists():
        assert CliRunner().invoke(main, args).exit_code == 0
        (d / "good.npz").write_bytes((d / "ck.npz").read_bytes())
    (d / "ck.npz").write_bytes(damaged((d / "good.npz").read_bytes(), data))
    assert_clean_exit(CliRunner().invoke(main, [*args[:4], "2", *args[5:], "--resume"]))


def test_checkpoint_meta_fields_are_validated(tmp_path):
    """Every field of a checkpoint's meta that a hand-edit or a bug can break: exit 2."""
    args = ["train", "--arch", "fc:4", "--epochs", "1", "-o", str(tmp_path / "m.json"),
            "--checkpoint", str(tmp_path / "ck.npz")]
    assert CliRunner().invoke(main, args).exit_code == 0
    with np.load(tmp_path / "ck.npz") as f:
        arrays = {k: f[k] for k in f.files}
    good = json.loads(arrays["meta"].tobytes())
    edits = [lambda m: m.pop("config"), lambda m: m.update(config=[]), lambda m: m.update(epoch="1"),
             lambda m: m.update(epoch=-1), lambda m: m.update(history=[{"epoch": "x"}]),
             lambda m: m.update(adam_t=True)]
    for edit in edits:
        meta = json.loads(json.dumps(good))
        edit(meta)
        np.savez(tmp_path / "ck.npz", **{**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})
        result = CliRunner().invoke(main, [*args[:4], "2", *args[5:], "--resume"])
        assert_clean_exit(result)
        assert result.exit_code == 2
    np.savez(tmp_path / "ck.npz", **{**arrays, "param0": arrays["param0"].astype(str)})
    assert CliRunner().invoke(main, [*args[:4], "2", *args[5:], "--resume"]).exit_code == 2


# -- hostile files, in a subprocess with a memory cap and a timeout ----------------------------

MEMORY_CAP = 3 * 2**30


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _refbnn(*args, timeout=20):
    # One BLAS thread: on a many-core machine each BLAS thread reserves address space that
    # would count against the cap before refbnn reads anything.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "refbnn.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_limited, env=env)
    return proc


def _npy(shape, dtype="<i8", body=b"") -> bytes:
    """A .npy member whose header declares `shape` (whatever the body holds)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + body


def _zip(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)


def _hostile_cases(tmp, valid):
    model = valid / "m.json"
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    deep = tmp / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    digits = tmp / "digits.json"
    doc = model_to_dict(example_model())
    digits.write_text(json.dumps(doc).replace('"Z": 4', '"Z": ' + "9" * 5000))
    huge_shape = tmp / "huge.npz"
    _zip(huge_shape, {"x.npy": _npy((2**40, 1, 8, 8)), "y.npy": _npy((2**40,))})
    bomb = tmp / "bomb.npz"   # 2^28 + 64 values declared (past the limit); 16 MiB of zeros deflate to 16 KiB
    n = 2**22 + 1
    _zip(bomb, {"x.npy": _npy((n, 1, 8, 8), "|u1", bytes(2**24)), "y.npy": _npy((n,), "|u1", bytes(n))},
         zipfile.ZIP_DEFLATED)
    renamed = tmp / "renamed.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    renamed.write_bytes(buf.getvalue())
    junk = tmp / "junk.npz"
    junk.write_bytes(b"junk" + (valid / "d.npz").read_bytes())
    empty = tmp / "empty.npz"
    empty.write_bytes(b"")
    wide = tmp / "wide.json"   # 2048 activations per input: 2^20 inputs of draws need 16 GiB
    write_model(wide, Model.build((8,), 1, [Linear(Weight.from_array(np.ones((2048, 8)))), Threshold((0,) * 2048),
                                            Linear(Weight.from_array(np.ones((2, 2048))))]))
    masks_huge = tmp / "masks.npz"
    _zip(masks_huge, {"batch_size.npy": _npy((), "<i8", np.int64(4).tobytes()),
                      "w0.npy": _npy((2**20, 2**20, 4, 1, 3, 3), "|b1")})
    # Junk before a zip is legal zip (self-extracting archives): the data are read as usual.
    accepted = [("metrics", model, junk)]
    return accepted, [
        ("inspect", fifo), ("inspect", "/dev/zero"), ("inspect", deep), ("inspect", digits),
        ("metrics", model, fifo), ("metrics", model, "/dev/zero"), ("metrics", model, huge_shape),
        ("metrics", model, bomb), ("metrics", model, renamed),
        ("metrics", model, empty), ("eval", model, valid / "d.npz", "--masks", masks_huge),
        ("verify", model, valid / "d.npz", "--claims", fifo), ("verify", model, valid / "d.npz", "--claims", deep),
        ("train", "--arch", "fc:99999999", "-o", tmp / "t.json"),
        ("masks", wide, "--ber", "0.1", "--inputs", "10", "--activations", "--batch-size", str(2**20),
         "-o", tmp / "k.npz"),
    ]


def test_hostile_files_get_one_line_within_memory_and_time(valid, tmp_path):
    accepted, refused = _hostile_cases(tmp_path, valid)
    for case in accepted:
        proc = _refbnn(*case)
        assert proc.returncode == 0 and not proc.stderr, (case, proc.stderr[-500:])
    for case in refused:
        proc = _refbnn(*case)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (case, proc.stderr[-500:])
        assert len(lines) == 1 and lines[0].startswith("refbnn: error: ") and "Traceback" not in proc.stderr, case


def _findings_of_the_held_out_campaign(tmp, valid):
    """The inputs the held-out fuzz campaign found unbounded or wrongly accepted, each with
    the words its one-line refusal must contain."""
    model, data = valid / "m.json", valid / "d.npz"
    claims = tmp / "reps.json"      # a bit error claim of 20,000 repetitions: past MAX_REPS
    claims.write_text(json.dumps({"bit_errors": {"results": [{"ber": "0.1", "accuracies": [0.5] * 20000}]}}))
    zeros = tmp / "zeros.json"      # 2 GiB of zero bytes (sparse): refused from its first bytes
    with open(zeros, "wb") as f:
        f.truncate(2**31)
    side = 2**15                    # one 2^15 x 2^15 layer: the documented 2^30-bit limit
    huge = tmp / "huge.json"
    with open(huge, "w") as f:
        f.write('{"format": "refbnn-model", "version": 1, "input": {"shape": [%d], "Z": 1}, "layers": '
                '[{"type": "linear", "weight": {"shape": [%d, %d], "bits": "' % (side, side, side))
        f.write(base64.b64encode(b"\xff" * (side * side // 8)).decode())
        f.write('"}}]}')
    write_data(tmp / "one.npz", np.ones((1, side), np.int64), np.zeros(1, np.int64))
    extra = tmp / "extra.npz"
    x, y = example_data(4)
    np.savez(extra, x=x, y=y, note=np.ones(1, np.int64))
    return [
        (("verify", model, data, "--claims", claims), "20000 repetitions per BER, past the limit of 10000"),
        (("eval", model, data, "--reps", "1000000000000"), "--reps: 1000000000000 repetitions per BER"),
        (("inspect", zeros), "not valid JSON (a NUL byte at offset 0"),
        (("metrics", huge, tmp / "one.npz"), "the fast engine needs 6.0 GiB to hold this model's weights"),
        (("train", "--arch", "fc:", "-o", tmp / "t.json"), "has no hidden layer, so the network has no neurons"),
        (("train", "--arch", "fc:8,,8", "-o", tmp / "t.json"), "an empty entry in 'fc:8,,8'"),
        (("metrics", model, extra), "expected exactly the arrays x and y, found note, x, y"),
    ]


def test_the_held_out_fuzz_findings_are_refused_up_front_in_one_line(valid, tmp_path):
    """Each command bounds its work and memory before it starts: the campaign's hang, its
    out-of-memory cases and its wrongly accepted inputs now end within the caps with exit 2
    and a one-line message that says why."""
    for case, words in _findings_of_the_held_out_campaign(tmp_path, valid):
        proc = _refbnn(*case)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (case[:2], proc.stderr[-500:])


def test_no_half_written_output_and_no_stray_temporaries_after_sigkill(valid, tmp_path):
    """A writer killed mid-write leaves `.NAME.PID.*.tmp`; the next write removes it, and
    the result file is complete or absent."""
    out = tmp_path / "m.json"
    stale = tmp_path / f".m.json.{2**22 + 12345}.abcd.tmp"   # a pid beyond pid_max: not running
    stale.write_text("{half")
    result = run_cli("metrics", valid / "m.json", valid / "d.npz", "--json", out)
    assert result.exit_code == 0 and not stale.exists()
    assert json.loads(out.read_text())["inputs"] == 12
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
