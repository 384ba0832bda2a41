"""Build, save and load potentials by name.

A model file is a plain dictionary saved with ``torch.save`` (loadable with
``weights_only=True``): the model kind, its hyperparameters, its weights, its float dtype,
free-form metadata (training data, metrics) and attachments: what was fitted on the model's
outputs for its weights (a latent domain, an uncertainty posterior), each tied to the weights by
their fingerprint so that a retrained model never carries a stale one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

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


def check_hyperparameters(kind: str, options: dict[str, Any], where: str = "model_options") -> None:
    """Refuse, before any training, model options that ``kind`` does not take (``elements``
    comes from the data), numbers that are not positive (every size, count and cutoff of the
    built-in models is) and values the model itself rejects; the message names ``where`` and
    the option."""
    cls = _potential_class(kind)
    takes = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    allowed = [name for name in takes if name != "elements"]
    for name, value in options.items():
        if name not in allowed:
            detail = "set from the data" if name == "elements" else f"{kind} takes {allowed}"
            raise InputError(f"{where}: unknown option {name!r} ({detail})")
        items = value if isinstance(value, list) else [value]
        for item in items:
            number = isinstance(item, numbers.Real) and not isinstance(item, bool)
            if number and not (item > 0 and math.isfinite(item)):
                raise InputError(f"{where}.{name}: {value!r} must be a positive number")
    try:
        with warnings.catch_warnings():  # the libraries' deprecation notes are not the user's
            warnings.simplefilter("ignore")
            build_potential(kind, elements=[1], **options)
    except InputError:
        raise
    except Exception as exc:  # the model's own check of a value (an irreps string, a type)
        raise InputError(f"{where}: {kind} refuses these options ({exc})") from None


def save_potential(potential: Potential, path: str | Path, metadata: dict | None = None) -> None:
    """Write the model to ``path`` atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    fingerprint = model_fingerprint(potential)
    payload = {
        "format": FORMAT,
        "kind": potential.kind,
        "hyperparameters": potential.hyperparameters(),
        "state_dict": potential.state_dict(),
        "dtype": str(next(potential.parameters()).dtype).removeprefix("torch."),
        "metadata": metadata or {},
        "attachments": {
            name: values
            for name, values in potential.attachments.items()
            if values.get("model") == fingerprint  # fitted for other weights: dropped
        },
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
    potential.attachments = payload.get("attachments", {})
    if dtype is not None:
        potential.to(dtype)
    return potential.eval()


def check_elements(potential: Potential, frames: Sequence[Atoms], model: str, where: str) -> None:
    """Refuse ``frames`` (from ``where``: a file, a system) with an element the model at
    ``model`` was not trained on, naming the frame and atom, before any MD or evaluation."""
    for index, atoms in enumerate(frames):
        try:
            potential.check_elements(torch.as_tensor(atoms.numbers))
        except InputError as exc:
            frame = f"frame {index}, " if len(frames) > 1 else ""
            raise InputError(f"{where}: {frame}{str(exc).replace('this model', model)}") from None


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


#: How a model was trained to give forces (``TrainConfig.forces``, recorded in its file):
#: −∂E/∂r of the energy head, the direct (non-conservative) head alone, or both heads.
TRAINED_FORCES = ("conservative", "direct", "both")


def trained_forces(potential: Potential) -> str:
    """Which of :data:`TRAINED_FORCES` the model was trained with (``conservative`` for a model
    without a training record). Conservative training that kept a direct-force term
    (``direct_forces_weight`` > 0: conservative fine-tuning of a direct model) trained both."""
    config = potential.metadata.get("training", {}).get("config", {})
    forces = config.get("forces", "conservative")
    kept_direct = (config.get("direct_forces_weight") or 0) > 0
    if forces == "conservative" and kept_direct and potential.supports_direct_forces:
        return "both"
    return forces


def attach(potential: Potential, name: str, values: dict) -> None:
    """Keep ``values`` (a plain dictionary fitted on this model's current weights) with the
    model under ``name``; :func:`save_potential` writes it into the model file."""
    potential.attachments = {
        **potential.attachments,
        name: {**values, "model": model_fingerprint(potential)},
    }


def attachment(potential: Potential, name: str) -> dict | None:
    """What was attached to the model under ``name``, or None when nothing was; refuses one
    fitted for other weights (the model was trained further after it was attached)."""
    values = potential.attachments.get(name)
    if values is not None and values.get("model") != model_fingerprint(potential):
        raise InputError(
            f"the model's {name} was fitted for other weights; fit it again for this model"
        )
    return values
