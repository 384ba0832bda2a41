"""Build, save and load potentials by name.

A model file is a plain dictionary saved with ``torch.save`` (loadable with
``weights_only=True``): the model kind, its hyperparameters, its weights, its float dtype and
free-form metadata (training data, metrics).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from stablemd.core.errors import InputError
from stablemd.core.files import load_tagged_torch_file, save_torch_file
from stablemd.models.potential import Potential

FORMAT = "stablemd-potential/1"


KINDS = ("painn", "mace")


def _potential_class(kind: str) -> type[Potential]:
    """The class of a model kind, imported only when asked (mace-torch is slow to import)."""
    if kind == "painn":
        from stablemd.models.painn import PaiNN

        return PaiNN
    if kind == "mace":
        try:
            from stablemd.models.mace_adapter import MACEPotential
        except ImportError:
            raise InputError(
                "the MACE adapter needs mace-torch: pip install stablemd[mace]"
            ) from None
        return MACEPotential
    raise InputError(f"unknown model kind {kind!r}; choose from {list(KINDS)}")


def build_potential(kind: str, **hyperparameters: Any) -> Potential:
    """A new, untrained potential of the given kind (``painn`` or ``mace``)."""
    return _potential_class(kind)(**hyperparameters)


def save_potential(potential: Potential, path: str | Path, metadata: dict | None = None) -> None:
    """Write the model to ``path`` atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "kind": potential.kind,
        "hyperparameters": potential.hyperparameters(),
        "state_dict": potential.state_dict(),
        "dtype": str(next(potential.parameters()).dtype).removeprefix("torch."),
        "metadata": metadata or {},
    }
    save_torch_file(payload, path)


def read_model_file(path: str | Path) -> dict:
    """The raw dictionary of a model file, with a clear error for anything else."""
    return load_tagged_torch_file(Path(path), FORMAT, "stablemd model file")


def load_potential(path: str | Path, dtype: torch.dtype | None = None) -> Potential:
    """Rebuild a saved potential; ``dtype`` overrides the dtype it was saved in."""
    payload = read_model_file(path)
    potential = build_potential(payload["kind"], **payload["hyperparameters"])
    potential.to(getattr(torch, payload["dtype"]))
    potential.load_state_dict(payload["state_dict"])
    potential.metadata = payload["metadata"]
    if dtype is not None:
        potential.to(dtype)
    return potential.eval()


def model_fingerprint(potential: Potential) -> str:
    """SHA-256 of a model's kind, hyperparameters and weights: what its results depend on, so a
    stored result is never taken for another model's (a retrained file under the same name, or
    another file of the same name)."""
    digest = hashlib.sha256(potential.kind.encode())
    digest.update(json.dumps(potential.hyperparameters(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(potential.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
