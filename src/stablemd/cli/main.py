"""The ``stablemd`` command: every subcommand mounted on one typer app.

User errors (:class:`~stablemd.core.errors.InputError`) end the program with one line on stderr and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from stablemd.cli import (
    analyze,
    data,
    diagnose,
    early_warning,
    explore,
    quickstart,
    simulate,
    stability,
    stable_train,
    systems,
    train,
    uncertainty,
)
from stablemd.cli.output import error_console
from stablemd.core.errors import InputError
from stablemd.core.runtime import adapt_threads_to_load, tune_memory_allocator

app = typer.Typer(
    help="Make machine-learned interatomic potentials trustworthy in long MD. "
    "Units: eV, Å, fs, K, amu.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(quickstart.quickstart)
app.add_typer(systems.app, name="systems")
app.add_typer(data.app, name="data", help="Generate, import, export and inspect reference data.")
app.command()(train.train)
app.command()(train.evaluate)
app.command()(simulate.simulate)
app.command()(analyze.analyze)
app.command()(stability.stability)
app.command()(diagnose.diagnose)
app.command(name="stable-train")(stable_train.stable_train)
app.add_typer(
    uncertainty.app, name="uncertainty", help="Calibrated ensemble-free uncertainty of a model."
)
app.command()(explore.explore)
app.add_typer(
    early_warning.app, name="early-warning", help="Store the CLI early warning with a model."
)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    tune_memory_allocator()
    adapt_threads_to_load()
    try:
        app(args=argv, prog_name="stablemd")
    except InputError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
