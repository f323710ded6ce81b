"""The `refbnn` command group and its one exit-2 handler."""
from __future__ import annotations

import sys

import click

from ..formats.files import InputError


class RefbnnGroup(click.Group):
    """The command group, with the one place where bad input becomes exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as e:
            click.echo(f"refbnn: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=RefbnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="refbnn")
def main() -> None:
    """Bit error tolerance metrics for binarized neural networks.

    The reference implementation of Buschjaeger et al. (2021): the neuron-level
    margin metric T (eqs. 1-5) and the inter-neuron metric VAR(Pi) (Algorithm 1,
    eq. 6), computed exactly as fractions.

    Start with `refbnn demo` (trains two small BNNs and compares them), or
    `refbnn example-model DIR` then `refbnn metrics DIR/example.json
    DIR/example.npz --importance`. Every command takes --help.
    """

