"""Geometry optimisation with FIRE and L-BFGS: conservative forces converge to 1e-4 eV/Å, a
curl never does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from md_support import PairLJ, argon_cluster, rattled, single_thread  # noqa: F401

from stablemd.core.errors import InputError
from stablemd.diagnose.relaxation import relax, relaxation_convergence
from stablemd.models.painn import PaiNN

pytestmark = pytest.mark.usefixtures("single_thread")


class SwirlCalculator(Calculator):
    """f = c ẑ × (r − r_c) + k (r_c − r)·ẑ ẑ: a pure curl in the xy plane about r_c (no point
    but r_c itself has zero force) and a spring along z; energy reported as 0."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, c: float = 0.5, k: float = 1.0, center=(0.0, 0.0, 0.0)):
        super().__init__()
        self.c, self.k, self.center = c, k, np.asarray(center)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions - self.center
        f = self.c * np.stack([-x[:, 1], x[:, 0], np.zeros(len(x))], axis=1)
        f[:, 2] = -self.k * x[:, 2]
        self.results = {"energy": 0.0, "forces": f}


def test_conservative_forces_converge_with_both_optimisers():
    start = rattled(argon_cluster(), 1, scale=0.1, seed=4)[0]
    results = relaxation_convergence(PairLJ(), start, "conservative")
    assert set(results) == {"FIRE", "LBFGS"}
    for result in results.values():
        assert result.converged, (result.optimizer, result.final_fmax_eV_per_A)
        assert result.final_fmax_eV_per_A < 1e-4
        assert result.fmax_trace_eV_per_A[0] > 1e-2  # it had work to do
        assert len(result.fmax_trace_eV_per_A) == result.steps + 1
        assert result.failure is None


def test_a_curl_never_converges():
    atoms = Atoms("H2", positions=[[1.0, 0.0, 0.3], [-0.5, 0.8, -0.2]])
    for name in ("FIRE", "LBFGS"):
        result = relax(SwirlCalculator(), atoms, name, fmax=1e-4, max_steps=300)
        assert not result.converged
        assert result.steps == 300
        # The in-plane force c·ρ never falls: the optimiser follows it outwards or circles.
        assert result.fmax_trace_eV_per_A.min() >= 0.5 * result.fmax_trace_eV_per_A[0] - 1e-12


def test_direct_head_runs_through_the_stablemd_calculator():
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], cutoff=5.0, n_features=8, n_interactions=1).double().eval()
    result = relaxation_convergence(
        model, molecule("CH3CH2OH"), "direct", optimizers=("FIRE",), max_steps=20
    )["FIRE"]
    assert result.steps <= 20 and len(result.fmax_trace_eV_per_A) == result.steps + 1
    assert np.isfinite(result.fmax_trace_eV_per_A).all()


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="unknown optimizer"):
        relax(SwirlCalculator(), Atoms("H"), "BFGS2")
    with pytest.raises(InputError, match="no direct-force head"):
        relaxation_convergence(PairLJ(), argon_cluster(), "direct")
