"""Training and export (docs/semantics.md §8): exact export, reproducibility, resume."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from refbnn.cli import main
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.files import InputError
from refbnn.training.architectures import Network, parse_arch
from refbnn.training.datasets import DataSplit
from refbnn.training.export import fold_batchnorm
from refbnn.training.nn import BatchNorm
from refbnn.training.trainer import TrainConfig, Trainer


def bn_with(mean, var, gamma, beta):
    bn = BatchNorm(len(mean), dtype=np.float64)
    bn.running_mean[:] = mean
    bn.running_var[:] = var
    bn.gamma.value[:] = gamma
    bn.beta.value[:] = beta
    return bn


def threshold_outputs(thr, h):
    return np.array([[(v > s) != (p < 0) for v in h] for s, p in zip(thr.thresholds, thr.polarity)])


def test_fold_batchnorm_covers_negative_zero_gamma_and_integer_tau():
    # (eps = 0 below, so sqrt(var + eps) = 2 for channels 0 and 1)
    # channel 0: gamma > 0, tau = 2 - 0.5 * 2 / 1 = 1 exactly: +1 iff h > 1 -> s = 1
    # channel 1: gamma < 0, tau = 3 - 1 * 2 / (-2) = 4 exactly (var + eps = 4 with eps = 0 below):
    #            +1 iff h < 4 iff h <= 3 -> polarity -1, s = 3
    # channel 2: gamma = 0, beta > 0 -> always +1;  channel 3: gamma = 0, beta < 0 -> never
    # channel 4: gamma > 0 with tau exactly 5 -> +1 iff h > 5 -> s = 5
    bn = bn_with([2.0, 3.0, 0.0, 0.0, 5.0], [4.0, 4.0, 1.0, 1.0, 1.0], [1.0, -2.0, 0.0, 0.0, 1.0],
                 [0.5, 1.0, 1.0, -1.0, 0.0])
    bn.eps = 0.0
    thr = fold_batchnorm(bn, 1, reach=10)
    assert thr.thresholds == (1, 3, -11, 10, 5) and thr.polarity == (1, -1, 1, 1, 1)
    h = np.arange(-10, 11)
    float_out = bn.forward(h[:, None].repeat(5, axis=1).astype(np.float64), False) > 0
    assert (threshold_outputs(thr, h) == float_out.T).all()


def test_fold_batchnorm_scales_tau_by_Z_in_the_first_layer():
    # float h = integer h / Z with Z = 16; tau_float = 0.3 -> tau = 4.8 on integers -> s = 4
    thr = fold_batchnorm(bn_with([0.3], [1.0], [1.0], [0.0]), 1 / 16, reach=100)
    assert thr.thresholds == (4,)


def small_split(seed=0, n=120, shape=(1, 6, 6), z=7):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, z + 1, (n,) + shape)
    y = (x[:, 0, :3].sum(axis=(1, 2)) > x[:, 0, 3:].sum(axis=(1, 2))).astype(np.int64)
    return DataSplit(x[:90], y[:90], x[90:], y[90:], z, 2, "synthetic")


@pytest.mark.parametrize("arch,order,ber,padding", [("fc:12,8", "pool-threshold", 0.0, 1),
                                                     ("cnn:4,mp,4;6", "pool-threshold", 0.1, 1),
                                                     ("cnn:4,mp,3,mp;", "threshold-pool", 0.05, 1),
                                                     ("cnn:4,3,mp;5", "pool-threshold", 0.0, 0)])
def test_trained_model_evaluation_equals_the_interpreter_on_every_input(arch, order, ber, padding):
    data = small_split()
    trainer = Trainer(TrainConfig(arch, epochs=3, batch_size=16, train_ber=ber, order=order,
                                  padding=padding), data)
    for _ in range(3):
        trainer.train_epoch()
    model = trainer.model()
    ref = Interpreter(model).predictions(data.x_test)
    assert list(FastEngine(model).predictions(data.x_test)) == ref
    assert trainer.history[-1].test_accuracy == np.mean(np.array(ref) == data.y_test)
    # the float network in evaluation mode agrees too, except where h ties with tau exactly
    float_pred = trainer.net.forward((data.x_test / data.Z).astype(np.float32), False).argmax(axis=1)
    assert np.mean(float_pred == np.array(ref)) > 0.9


def _train(tmp_path, epochs, resume_from=None, name="ck.npz"):
    data = small_split()
    cfg = TrainConfig("fc:10", epochs=epochs, batch_size=16, train_ber=0.1, seed=3)
    t = Trainer(cfg, data)
    if resume_from:
        t.load(resume_from)
    while t.epoch < epochs:
        t.train_epoch()
        t.save(tmp_path / name)
    return t


def test_resume_gives_exactly_the_uninterrupted_result(tmp_path):
    straight = _train(tmp_path, 4, name="a.npz")
    _train(tmp_path, 2, name="b.npz")
    resumed = _train(tmp_path, 4, resume_from=tmp_path / "b.npz", name="b.npz")
    for p, q in zip(straight.net.params(), resumed.net.params()):
        assert np.array_equal(p.value, q.value)
    assert straight.model() == resumed.model()
    assert [h.loss for h in straight.history] == [h.loss for h in resumed.history]


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    _train(tmp_path, 1, name="c.npz")
    other = Trainer(TrainConfig("fc:10", epochs=2, batch_size=16, train_ber=0.2, seed=3), small_split())
    with pytest.raises(InputError, match=r"config.train_ber: checkpoint has 0.1, this run has 0.2"):
        other.load(tmp_path / "c.npz")


def test_architecture_presets_match_table_II():
    assert parse_arch("fashion-fc") == ([], [2048, 2048])
    assert parse_arch("fashion-cnn") == ([64, "mp", 64, "mp"], [2048])
    net = Network("fashion-cnn", (1, 28, 28), 10, 0)
    # two pooled 3x3 convs with padding 1: 28 -> 14 -> 7, so the FC layer sees 64 * 7 * 7
    assert net.weighted[2].w.value.shape == (2048, 64 * 7 * 7)
    with pytest.raises(InputError, match="--arch: 'mp' must follow a conv width"):
        parse_arch("cnn:mp,4")


def test_train_command_writes_model_and_test_data(tmp_path):
    np.savez(tmp_path / "train.npz", x=small_split().x_train, y=small_split().y_train)
    np.savez(tmp_path / "test.npz", x=small_split().x_test, y=small_split().y_test)
    out = tmp_path / "m.json"
    args = ["train", "--arch", "fc:8", "--dataset", f"npz:{tmp_path}/train.npz,{tmp_path}/test.npz",
            "--z", "7", "--epochs", "2", "-o", str(out), "--test-data", str(tmp_path / "t.npz")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["input"] == {"shape": [1, 6, 6], "Z": 7}
    again = CliRunner().invoke(main, args[:-4] + ["-o", str(tmp_path / "m2.json")])
    assert (tmp_path / "m2.json").read_text() == out.read_text()        # reproducible
    metrics = CliRunner().invoke(main, ["metrics", str(out), str(tmp_path / "t.npz")])
    assert metrics.exit_code == 0 and again.exit_code == 0
    # a trained model is certified and no adversarial pattern at the certified k changes it
    certify = CliRunner().invoke(main, ["certify", str(out), str(tmp_path / "t.npz"), "--check", "5"])
    assert certify.exit_code == 0, certify.output


def test_train_command_bad_options_exit_2(tmp_path):
    split = small_split()
    np.savez(tmp_path / "a.npz", x=split.x_train, y=split.y_train)
    dataset = ["--dataset", f"npz:{tmp_path}/a.npz,{tmp_path}/a.npz", "--z", "7"]
    result = CliRunner().invoke(main, ["train", "--arch", "rnn:3", *dataset, "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "--arch: unknown 'rnn:3'" in result.output
    result = CliRunner().invoke(main, ["train", "--resume", *dataset, "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "--resume: no checkpoint" in result.output
    assert not (tmp_path / "m.json").exists()


def test_demo_tells_the_story_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(main, ["demo", "--epochs", "5", "--reps", "2", "--out", str(tmp_path),
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert list(r["models"]) == ["regular", "flips 0.05"]
    for col in r["models"].values():
        assert set(col) == {"train_ber", "sweep", "T", "T_bar", "var_importance"}
        # BER 0 repeats the clean accuracy exactly, so its spread is 0
        assert col["sweep"]["0"]["std"] == 0
    assert (tmp_path / "flips.json").exists() and (tmp_path / "test.npz").exists()
