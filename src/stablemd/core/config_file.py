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


def read_config_file(path: str | Path) -> dict:
    """The mapping of option names to values in the YAML file at ``path`` (empty file: ``{}``);
    a missing, binary or malformed file, or one that is not a mapping, raises
    :class:`InputError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a configuration file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such configuration file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a YAML configuration file (not text)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping of option names to values")
    return loaded or {}


def validation_message(error: dict) -> tuple[str, str]:
    """(dotted field, message) of one pydantic error; a check of several fields together has
    no field and its message without pydantic's "Value error, " prefix."""
    field = ".".join(str(part) for part in error["loc"])
    return field, str(error["msg"]).removeprefix("Value error, ")


def load_config(schema: type[ConfigT], path: str | Path | None, **overrides) -> ConfigT:
    """Validate a YAML file (optional) plus command-line overrides (``None`` means not given)."""
    values: dict = read_config_file(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        field, message = validation_message(exc.errors()[0])
        text = f"{where}field {field!r}: {message}" if field else where + message
        raise InputError(text) from None


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
