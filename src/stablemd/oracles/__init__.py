"""Oracles: the reference methods (ASE calculators) that label structures."""

from stablemd.oracles.label import LabelResult, label
from stablemd.oracles.registry import get_oracle, level_of_theory, list_oracles
from stablemd.oracles.spcfw import SPCFwCalculator

__all__ = [
    "LabelResult",
    "SPCFwCalculator",
    "get_oracle",
    "label",
    "level_of_theory",
    "list_oracles",
]
