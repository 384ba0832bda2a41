"""Small file helpers shared by the commands: atomic JSON writing."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(data: dict, path: Path) -> None:
    """Write ``data`` as indented JSON via a ``.partial`` sibling, so it is never half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
