"""Helpers shared by the MD tests (no tests here): a batched Lennard-Jones toy potential,
argon clusters to run it on, and rattled copies of a structure."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from ase.optimize import LBFGS
from torch import nn

from stablemd.md.forces import ForceResult
from stablemd.md.starts import state_from_atoms
from stablemd.models.potential import Potential

ARGON_EPSILON_EV = 0.0104
ARGON_SIGMA_A = 3.4


class PairLJ(Potential):
    """Lennard-Jones over all pairs within ``cutoff`` (Å), float64, as a tiny Potential."""

    kind = "lj-test"

    def __init__(self, epsilon=ARGON_EPSILON_EV, sigma=ARGON_SIGMA_A, cutoff=30.0):
        super().__init__([18], cutoff)
        self.epsilon = nn.Parameter(torch.tensor(float(epsilon), dtype=torch.float64))
        self.sigma = float(sigma)
        self.double()
        self.atoms_evaluated = 0

    def hyperparameters(self):
        return {"epsilon": float(self.epsilon), "sigma": self.sigma, "cutoff": self.cutoff}

    def raw_outputs(self, batch, neighbors, direct_forces, features, once_differentiable=False):
        self.atoms_evaluated += batch.n_atoms
        r = neighbors.vectors(batch.positions).norm(dim=1)
        x6 = (self.sigma / r) ** 6
        pair = 4 * self.epsilon * (x6.square() - x6)
        return {
            "raw_energies": 0.5
            * batch.positions.new_zeros(batch.n_atoms).index_add(0, neighbors.centers, pair)
        }


@lru_cache(maxsize=1)
def _relaxed_argon_cluster():
    atoms = Icosahedron("Ar", 2, latticeconstant=5.26)
    atoms.calc = LennardJones(epsilon=ARGON_EPSILON_EV, sigma=ARGON_SIGMA_A, rc=30.0)
    LBFGS(atoms, logfile=None).run(fmax=1e-4)
    atoms.calc = None
    return atoms


def argon_cluster():
    """An LJ-relaxed 13-atom argon icosahedron (a fresh copy)."""
    return _relaxed_argon_cluster().copy()


def argon_state(n_replicas: int):
    """``n_replicas`` copies of the argon cluster, at rest."""
    return state_from_atoms([argon_cluster()] * n_replicas)


class ClusterLJ:
    """Analytic Lennard-Jones force term for replicas of equal size (no cutoff), float64.

    Counts the atoms it evaluates in ``atoms_evaluated``; frozen replicas are skipped.
    """

    def __init__(self, epsilon=ARGON_EPSILON_EV, sigma=ARGON_SIGMA_A):
        self.epsilon, self.sigma = epsilon, sigma

    def __call__(self, state):
        n = state.n_atoms // state.n_systems
        x = state.positions.view(state.n_systems, n, 3)
        d = x[:, :, None, :] - x[:, None, :, :]  # r_i - r_j
        r2 = d.square().sum(-1) + torch.eye(n, dtype=x.dtype)  # no self-pair
        x6 = (self.sigma**2 / r2) ** 3 * (1 - torch.eye(n, dtype=x.dtype))
        energy = 2 * self.epsilon * (x6.square() - x6).sum(dim=(1, 2))
        magnitude = 24 * self.epsilon * (2 * x6.square() - x6) / r2
        forces = (magnitude[..., None] * d).sum(dim=2).reshape(-1, 3)
        active = state.active
        return ForceResult(energy * active, forces * state.active_atoms[:, None])


@pytest.fixture
def single_thread():
    """Tiny tensors gain nothing from threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_steps(integrator, state, forces_fn, n_steps):
    state = integrator.prepare(state, forces_fn)
    for _ in range(n_steps):
        state = integrator.step(state, forces_fn)
    return state


def rattled(atoms: Atoms, n: int, scale: float = 0.05, seed: int = 0) -> list[Atoms]:
    """``n`` copies of ``atoms`` displaced by Gaussian noise of ``scale`` Å."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        copy = atoms.copy()
        copy.positions += rng.normal(scale=scale, size=copy.positions.shape)
        out.append(copy)
    return out
