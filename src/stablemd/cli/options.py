"""Command-line options into typed settings, with errors that name the option."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError

from stablemd.core.config_file import read_config_file, validation_message
from stablemd.core.errors import InputError

SettingsT = TypeVar("SettingsT", bound=BaseModel)

#: Help of --system wherever it is optional.
SYSTEM_HELP = (
    "Built-in or stored system (see stablemd systems); frames in another atom order are matched "
    "by bond graph. (default: the system the model recorded, else one derived from --starts)"
)

#: --early-warning-indicator and --freeze-on-warning, wherever MD runs the early warning.
EARLY_WARNING_INDICATOR_OPTION = typer.Option(
    "grade", help="Indicator of the CLI index: grade (extrapolation grade > 2) or box."
)
FREEZE_ON_WARNING_OPTION = typer.Option(
    False,
    help="Freeze a replica once its CLI passes the critical level stored with the model "
    "(reason cli_above_critical_level; it counts as unstable at that time).",
)


def early_warning_option(interval: str, note: str = ""):
    """The --early-warning/--no-early-warning option of a command that accumulates the index
    every ``interval`` (e.g. ``--check-every steps``); ``note`` ends its first sentence."""
    return typer.Option(
        None,
        "--early-warning/--no-early-warning",
        help=f"Accumulate each replica's CLI index (latent instability, docs/early_warning.md) "
        f"every {interval} and plot it in early_warning.png{note}. (default: for every model "
        "that carries a latent domain; --early-warning refuses a model without one)",
    )


#: Settings fields whose command-line option is not the field name in kebab case.
OPTION_NAMES = {
    "temperature_K": "--temperature",
    "timestep_fs": "--timestep",
    "friction_per_fs": "--friction",
    "tau_fs": "--tau",
    "max_bond_deviation_A": "--max-bond-deviation",
    "min_intermolecular_A": "--min-distance",
    "max_time_minutes": "--max-time",
    "reference_temperature_K": "--reference-temperature",
    "nonbonded_intramolecular": "--intramolecular",
    "pressure_bar": "--pressure",
    "barostat_time_fs": "--barostat-time",
    "compressibility_per_bar": "--compressibility",
    "lr_warmup_epochs": "--lr-warmup",
    "stable_lr_warmup_epochs": "--stable-lr-warmup",
}


def option_name(field: str) -> str:
    """The command-line option of a settings field."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def settings_from_options(schema: type[SettingsT], **values) -> SettingsT:
    """``schema`` validated from option values; the first invalid one raises
    :class:`InputError` naming its option, e.g. ``--timestep 20.0: Input should be ≤ 10``."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        field, message = validation_message(exc.errors()[0])
        if not field:  # a check of several options together names them itself
            raise InputError(message) from None
        top = field.split(".")[0]
        raise InputError(f"{option_name(top)} {values.get(top)!r}: {message}") from None


def config_from_options(schema: type[SettingsT], config: Path | None, **options) -> SettingsT:
    """``schema`` validated from a YAML ``--config`` file (optional) and the options given on the
    command line (``None``: not given; they win over the file). An invalid value raises
    :class:`InputError` naming its option, or the file and its field."""
    values = read_config_file(config) if config is not None else {}
    given = {key: value for key, value in options.items() if value is not None}
    try:
        return schema.model_validate({**values, **given})
    except ValidationError as exc:
        field, message = validation_message(exc.errors()[0])
        top = field.split(".")[0]
        if not field:
            where = f"{config}: " if config is not None else ""
            raise InputError(where + message) from None
        if top in given:
            raise InputError(f"{option_name(top)} {given[top]!r}: {message}") from None
        raise InputError(f"{config}: field {field!r}: {message}") from None


def check_positive(**options: float | None) -> None:
    """Refuse an option value that is not a positive finite number, naming the option:
    ``check_positive(batch_size=0)`` → ``--batch-size 0: must be positive``."""
    for name, value in options.items():
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise InputError(f"{option_name(name)} {value!r}: must be positive (and finite)")


def system_params(params: list[str], option: str = "--param") -> dict:
    """``--param KEY=VALUE`` strings as keyword arguments of a system (values as int, float or
    text), e.g. ``n_molecules=32`` for water; of anything else with another ``option`` name."""
    out = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{option} {item!r}: expected KEY=VALUE")
        for convert in (int, float, str):
            try:
                out[key] = convert(value)
                break
            except ValueError:
                continue
    return out
