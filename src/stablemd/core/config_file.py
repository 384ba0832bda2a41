"""Typed configuration: read from YAML files at the edge of the program, compared on resume."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from stablemd.core.errors import InputError
from stablemd.core.files import check_same_options

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(schema: type[ConfigT], path: str | Path | None, **overrides) -> ConfigT:
    """Validate a YAML file (optional) plus command-line overrides (``None`` means not given)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no such configuration file") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of option names to values")
        values.update(loaded or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{where}field {field!r}: {first['msg']}") from None


def field_defaults(schema: type[BaseModel]) -> dict:
    """The default of every field of ``schema`` that has one, by field name."""
    return {
        key: field.get_default(call_default_factory=True)
        for key, field in schema.model_fields.items()
        if not field.is_required()
    }


def check_same_config(
    path: str | Path, saved: dict, config: BaseModel, may_change: Collection[str] = ()
) -> None:
    """Refuse to resume the run checkpointed at ``path`` (``saved``: its options) under another
    ``config``; options added since the checkpoint was written count as their defaults."""
    check_same_options(path, saved, config.model_dump(), may_change, field_defaults(type(config)))
