"""The `refbnn` command group: the one place where outcomes become exit codes.

0 success; 1 a check failed (the commands exit with it themselves); 2 bad input or a
bad option, with one line `refbnn: error: ...` naming the file or option and field;
3 an unexpected error (a bug in refbnn), with one line and, with `refbnn --debug`,
the traceback. Messages are one line of bounded length, whatever the input held.
"""
from __future__ import annotations

import sys
import traceback

import click

from ..formats.files import InputError

BAD_INPUT, INTERNAL_ERROR, INTERRUPTED = 2, 3, 130
MAX_MESSAGE = 400


def one_line(text: str) -> str:
    """A message on one line, cut to MAX_MESSAGE characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def _fail(code: int, message: str) -> None:
    click.echo(f"refbnn: {one_line(message)}", err=True)
    sys.exit(code)


class RefbnnGroup(click.Group):
    """click's group, with exit codes and one-line messages for every way a run can end."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            _fail(BAD_INPUT, f"error: {where}{e.format_message()} (see --help)")
        except InputError as e:
            _fail(BAD_INPUT, f"error: {e}")
        except click.ClickException as e:
            _fail(e.exit_code, f"error: {e.format_message()}")
        except (click.Abort, KeyboardInterrupt):
            _fail(INTERRUPTED, "interrupted")
        except MemoryError:
            _fail(BAD_INPUT, "error: out of memory (the input is too large for this machine; "
                             "see the limits in docs/semantics.md §3.3)")
        except Exception as e:   # a bug: say so in one line, the traceback only on request
            if argv[:1] == ["--debug"]:
                traceback.print_exc()
            _fail(INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e} -- this is a bug in refbnn; "
                                  f"please report it with the command line (refbnn --debug ... shows the traceback)")
        if standalone_mode:
            sys.exit(code or 0)
        return code


@click.group(cls=RefbnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="refbnn")
@click.option("--debug", is_flag=True, help="Print the traceback of an unexpected error (exit code 3).")
def main(debug: bool) -> None:
    """Bit error tolerance metrics for binarized neural networks.

    The reference implementation of Buschjaeger et al. (2021): the neuron-level
    margin metric T (eqs. 1-5) and the inter-neuron metric VAR(Pi) (Algorithm 1,
    eq. 6), computed exactly as fractions.

    Start with `refbnn demo` (trains two small BNNs and compares them), or
    `refbnn example-model DIR` then `refbnn metrics DIR/example.json
    DIR/example.npz --importance`. Every command takes --help.

    Exit codes: 0 success, 1 a check failed, 2 bad input (one line naming the file
    or option and the field), 3 an unexpected error (a bug; --debug shows it).
    """
