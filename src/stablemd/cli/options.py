"""Command-line options into typed settings, with errors that name the option."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from stablemd.core.errors import InputError

SettingsT = TypeVar("SettingsT", bound=BaseModel)

#: Settings fields whose command-line option is not the field name in kebab case.
OPTION_NAMES = {
    "temperature_K": "--temperature",
    "timestep_fs": "--timestep",
    "friction_per_fs": "--friction",
    "tau_fs": "--tau",
    "max_bond_deviation_A": "--max-bond-deviation",
    "min_intermolecular_A": "--min-distance",
}


def option_name(field: str) -> str:
    """The command-line option of a settings field."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def settings_from_options(schema: type[SettingsT], **values) -> SettingsT:
    """``schema`` validated from option values; the first invalid one raises
    :class:`InputError` naming its option, e.g. ``--timestep: Input should be ≤ 10``."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise InputError(f"{option_name(field)} {values.get(field)!r}: {first['msg']}") from None


def system_params(params: list[str]) -> dict:
    """``--param KEY=VALUE`` strings as keyword arguments of a system (values as int, float or
    text), e.g. ``n_molecules=32`` for water."""
    out = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        for convert in (int, float, str):
            try:
                out[key] = convert(value)
                break
            except ValueError:
                continue
    return out
