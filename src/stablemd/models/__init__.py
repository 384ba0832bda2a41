"""Potentials behind one contract (:class:`~stablemd.models.potential.Potential`)."""

from stablemd.models.potential import Potential, predict
from stablemd.models.registry import build_potential, load_potential, save_potential

__all__ = ["Potential", "predict", "build_potential", "load_potential", "save_potential"]
