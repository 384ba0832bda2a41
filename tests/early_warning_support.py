"""Helpers shared by the early-warning MD tests (no tests here): a tiny PaiNN that carries a
latent domain and a critical level, and an ethanol pushed out of that domain."""

from __future__ import annotations

import numpy as np
import torch
from md_support import rattled

from stablemd.diagnose.early_warning import CriticalLevel, fit_latent_domain
from stablemd.diagnose.early_warning.model_file import EarlyWarning, attach_early_warning
from stablemd.models.painn import PaiNN
from stablemd.systems import get_system

#: Reached by 2 flagged atoms of 9 after 9 ps·10⁻³ of the run (4 calls of 2.5 fs).
LEVEL = CriticalLevel(level_ps=0.002, calibration_ps=0.01)


def warned_model() -> PaiNN:
    """A tiny PaiNN with small forces (the molecule stays near its start at 10 K) carrying a
    latent domain fitted on rattled ethanol and a critical level."""
    ethanol = get_system("ethanol")
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1, cutoff=3.0).double()
    with torch.no_grad():
        model.energy_scaling.scale.fill_(1e-3)
    domain = fit_latent_domain(model, rattled(ethanol.atoms, 30, scale=0.05))
    attach_early_warning(model, EarlyWarning(domain, {"grade": LEVEL, "box": LEVEL}))
    return model


def squeezed_ethanol():
    """Ethanol with the two H atoms of its CH2 group 0.3 Å apart: outside the domain."""
    atoms = get_system("ethanol").atoms.copy()
    h1, h2 = atoms.positions[5], atoms.positions[6]
    atoms.positions[6] = h1 + 0.3 * (h2 - h1) / np.linalg.norm(h2 - h1)
    return atoms


def starts():
    """The squeezed ethanol and three relaxed ones (4 replicas: each start once)."""
    ethanol = get_system("ethanol").atoms
    return [squeezed_ethanol(), ethanol, ethanol, ethanol]
