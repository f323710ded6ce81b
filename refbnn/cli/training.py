"""Commands that train: `train` (one BNN) and `demo` (the paper's story on two)."""
from __future__ import annotations

from dataclasses import asdict

import click
from tabulate import tabulate

from ..demo.run import demo
from ..formats.datafile import write_data
from ..formats.files import write_json
from ..formats.modelfile import write_model
from ..semantics.margin import DEFAULT_B
from ..training.datasets import load_dataset
from ..training.trainer import EpochLog, TrainConfig, train
from .common import SEED, FiniteFloat, Progress, json_option, parsed, writable
from .group import main
from .options import parse_bers


def train_options(func):
    func = click.option("--order", type=click.Choice(["pool-threshold", "threshold-pool"]),
                        default="pool-threshold", show_default=True,
                        help="Block order: conv -> pool -> BN -> sign (the authors'), or pool after sign.")(func)
    func = click.option("--padding", default=1, show_default=True, type=click.IntRange(0, 1),
                        help="Zero padding of the 3x3 convolutions.")(func)
    func = click.option("--seed", default=0, show_default=True, type=SEED,
                        help="Seed of initialisation, shuffling and training flips.")(func)
    func = click.option("--lr", default=1e-3, show_default=True,
                        type=FiniteFloat(0, 1e6, lo_open=True),
                        help="Adam learning rate, halved every 25 epochs.")(func)
    func = click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1, 2**20))(func)
    func = click.option("--epochs", default=None, type=click.IntRange(1, 10**6),
                        help="Epochs (paper: 100 for Fashion, 250 for CIFAR10).")(func)
    func = click.option("--dataset", default="digits", show_default=True,
                        help="digits (scikit-learn's, built in), fashion-mnist[:DIR] (default DIR "
                             "/usr/share/datasets/fashion-mnist), mnist-idx:DIR, cifar10:DIR, npz:TRAIN,TEST.")(func)
    func = click.option("--z", "z", default=None, type=click.IntRange(1),
                        help="Input bound Z, for npz data sets.")(func)
    return func


def _hooks(label: str, epochs: int, err: bool = False) -> dict:
    """Progress bar per epoch and one printed line per finished epoch (on stderr with
    `err`, where the epochs are progress and stdout is the command's result)."""
    def progress(epoch: int) -> Progress:
        return Progress(f"{label}epoch {epoch}/{epochs}")

    def on_epoch(log: EpochLog) -> None:
        click.echo(f"{label}epoch {log.epoch:3d}/{epochs}: loss {log.loss:.4f}, "
                   f"train accuracy {log.train_accuracy:.4f}, test accuracy {log.test_accuracy:.4f}", err=err)
    def on_resume(epoch: int) -> None:
        click.echo(f"{label}resumed after epoch {epoch}", err=err)
    return {"progress": progress, "on_epoch": on_epoch, "on_resume": on_resume}


@main.command("train")
@click.option("--arch", default="fc-32", show_default=True,
              help="fc:W1,W2,... | cnn:C1,mp,C2,mp;F1,... | a preset: fashion-fc, fashion-cnn, "
                   "cifar10-cnn, fc-8..fc-128, cnn-8..cnn-64.")
@train_options
@click.option("--train-ber", default=0.0, show_default=True, type=FiniteFloat(0, 1),
              help="Bit flip training: flip each binarised weight with this probability at every forward call.")
@click.option("-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False), callback=writable,
              help="The model file to write (docs/semantics.md §3.1).")
@click.option("--test-data", "test_path", default=None, type=click.Path(dir_okay=False), callback=writable,
              help="Also write the test split as a data file for metrics/eval/certify.")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False), callback=writable,
              help="Write a checkpoint (.npz) after every epoch.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint to --epochs: the same result "
                                              "as an uninterrupted run.")
@json_option
def train_cmd(arch, order, padding, seed, lr, batch_size, epochs, dataset, z, train_ber, out_path, test_path,
              checkpoint, resume, json_path) -> None:
    """Train a BNN in NumPy (straight-through estimator, batch norm, Adam) and export it.

    The export folds batch norm into integer thresholds; the reported test accuracy is
    computed through the exported integer model, so it is exactly what `refbnn metrics`
    will report. Reproducible: the same options give the same model, bit for bit.
    """
    data = load_dataset(dataset, z)
    cfg = TrainConfig(arch, epochs=epochs or 20, batch_size=batch_size, lr=lr, lr_halving=25,
                      train_ber=train_ber, seed=seed, order=order, padding=padding)
    trainer = train(cfg, data, checkpoint, resume, **_hooks("", cfg.epochs))
    write_model(out_path, trainer.model())
    if test_path:
        write_data(test_path, data.x_test, data.y_test)
    click.echo(f"wrote {out_path}" + (f" and {test_path}" if test_path else ""))
    if json_path:       # the run: what was trained, and its loss and accuracies per epoch
        write_json(json_path, {"model": out_path, "test_data": test_path, "dataset": data.name, "arch": arch,
                               "epochs": cfg.epochs, "train_ber": train_ber, "seed": seed,
                               "history": [asdict(h) for h in trainer.history]})


@main.command("demo")
@click.option("--dataset", default="digits", show_default=True,
              help="digits (built in) or fashion-mnist[:DIR] (the paper's data).")
@click.option("--arch", default=None, help="Architecture (default: fc-32 on digits, fc-128 on fashion-mnist).")
@click.option("--epochs", default=None, type=click.IntRange(1, 10**6),
              help="Epochs per model (default: 60 on digits, 10 on fashion-mnist).")
@click.option("--train-ber", default=0.05, show_default=True, type=FiniteFloat(0, 1),
              help="Flip probability for the bit-flip-trained model.")
@click.option("--ber", "ber_text", default="0,0.01,0.05,0.1", show_default=True,
              help="Bit error rates for the accuracy sweep.")
@click.option("--reps", default=5, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--out", "out_dir", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the two models and the test data.")
@json_option
def demo_cmd(dataset, arch, epochs, train_ber, ber_text, reps, seed, out_dir, json_path) -> None:
    """The paper's story in one command: train a regular and a bit-flip-trained BNN, then
    compare accuracy over BER, the T tuple, T-bar and VAR(Pi) side by side.

    Bit flip training should raise the accuracy under errors, raise T (larger margins,
    paper section V-B) and, for small networks, lower VAR(Pi) (Hypothesis 1).
    """
    bers = parsed(ber_text, parse_bers)
    data = load_dataset(dataset)
    fashion = dataset.startswith("fashion")
    arch = arch or ("fc-128" if fashion else "fc-32")
    epochs = epochs or (10 if fashion else 60)
    result = demo(data, arch, epochs, train_ber, bers, reps, seed, out_dir,
                  lambda name: _hooks(f"[{name}] ", epochs, err=True))
    columns = result["models"]
    names = list(columns)
    rows = [[f"accuracy at BER {b}"] + [f"{columns[n]['sweep'][b]['mean']['value']:.4f}" for n in names]
            for b, _ in bers]
    rows += [[f"T^{b}"] + [f"{columns[n]['T'][str(b)]['value']:.4f}" for n in names] for b in DEFAULT_B]
    rows += [["T-bar"] + [f"{columns[n]['T_bar']['value']:.4f}" for n in names]]
    rows += [["VAR(Pi)"] + [f"{columns[n]['var_importance']['value']:.3e}" for n in names]]
    click.echo(f"{data.name}, {arch}, {epochs} epochs, {len(data.y_test)} test inputs, "
               f"{reps} repetitions per BER (seed {seed})")
    click.echo(tabulate(rows, headers=[""] + names))
    click.echo(f"models and test data in {out_dir}/ (try: refbnn metrics {out_dir}/flips.json "
               f"{out_dir}/test.npz --importance)")
    if json_path:
        write_json(json_path, result)
