"""Stability criteria (:class:`~stablemd.md.monitoring.Criterion`): ``criterion(state)`` is a
BoolTensor [n_systems], True = unstable; the runner freezes the replicas flagged.

Criteria only read the state. The geometric ones treat the replicas as copies of one structure
(atom order inside each replica as in the structure) and count a replica whose value is NaN as
unstable. Thresholds follow StABlE (paper appendix A.5): bond-length deviation 0.5 Å for
evaluation (0.25 Å while training), minimum distance of non-bonded atoms 1.2 Å, RDF deviation 3.0
over 1 ps windows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from stablemd.analysis.geometry import bond_lengths, pair_vectors, replica_positions
from stablemd.analysis.structure import DR_A, SIGMA_A, radial_distribution
from stablemd.core.errors import InputError
from stablemd.md.monitoring import Criterion
from stablemd.md.state import MDState
from stablemd.systems.system import System

_F64 = torch.float64


def _replica_frames(state: MDState, n_atoms: int, what: str) -> torch.Tensor:
    """Replica positions [R, N, 3], after checking that a replica holds ``n_atoms`` atoms."""
    frames = replica_positions(state)
    if frames.shape[1] < n_atoms:
        raise InputError(f"{what}: needs {n_atoms} atoms, a replica has {frames.shape[1]}")
    return frames


class BondLengthDeviation(Criterion):
    """Unstable when max over bonds of |r_b − r_b^ref| exceeds ``max_deviation`` (Å).

    ``bonds`` [n_bonds, 2] and ``reference_lengths`` [n_bonds] Å describe one structure and apply
    to every replica of it; bond vectors use the minimum image in periodic cells.
    """

    name = "bond_length_deviation"

    def __init__(self, bonds, reference_lengths, max_deviation: float = 0.5, every: int = 1):
        super().__init__(every)
        self.bonds = torch.as_tensor(np.asarray(bonds), dtype=torch.long).reshape(-1, 2)
        if len(self.bonds) == 0:
            raise InputError("bonds: no bonds given")
        self.reference_lengths = torch.as_tensor(np.asarray(reference_lengths), dtype=_F64)
        if self.reference_lengths.shape != (len(self.bonds),):
            raise InputError(
                f"reference_lengths: {len(self.reference_lengths)} values for "
                f"{len(self.bonds)} bonds"
            )
        self.max_deviation = float(max_deviation)

    def values(self, state: MDState) -> torch.Tensor:
        """Largest bond-length deviation per replica [n_systems] Å."""
        frames = _replica_frames(state, int(self.bonds.max()) + 1, "bonds")
        lengths = bond_lengths(frames, self.bonds, state.cell, state.pbc)
        return (lengths - self.reference_lengths).abs().amax(dim=-1)

    def __call__(self, state: MDState) -> torch.Tensor:
        return ~(self.values(state) <= self.max_deviation)


class MinNonbondedDistance(Criterion):
    """Unstable when two atoms of different molecules come closer than ``min_distance`` (Å).

    ``molecule_index`` [n_atoms] of one structure (e.g. ``System.molecule_index``). With
    ``bonds`` [n_bonds, 2], non-bonded pairs inside a molecule count too: the paper's "minimum
    distance between non-bonded atoms" (StABlE appendix A.5), which also catches a molecule
    folding onto itself (water's H–O–H angle closing). Distances use the minimum image in
    periodic cells. A single molecule without ``bonds`` is never unstable.
    """

    name = "min_nonbonded_distance"

    def __init__(self, molecule_index, min_distance: float = 1.2, bonds=None, every: int = 1):
        super().__init__(every)
        molecules = torch.as_tensor(np.asarray(molecule_index), dtype=torch.long)
        n_atoms = len(molecules)
        i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
        counted = molecules[i] != molecules[j]
        if bonds is not None:
            bonded = torch.zeros(n_atoms, n_atoms, dtype=torch.bool)
            pairs = torch.as_tensor(np.asarray(bonds), dtype=torch.long).reshape(-1, 2)
            bonded[pairs[:, 0], pairs[:, 1]] = bonded[pairs[:, 1], pairs[:, 0]] = True
            counted = ~bonded[i, j]
        self.i, self.j = i[counted], j[counted]
        self.n_atoms = n_atoms
        self.min_distance = float(min_distance)

    def values(self, state: MDState) -> torch.Tensor:
        """Smallest counted distance per replica [n_systems] Å (inf without pairs)."""
        frames = _replica_frames(state, self.n_atoms, "molecule_index")
        if len(self.i) == 0:
            return torch.full((state.n_systems,), torch.inf, dtype=_F64)
        distances = pair_vectors(frames, self.i, self.j, state.cell, state.pbc).norm(dim=-1)
        return distances.amin(dim=-1)

    def __call__(self, state: MDState) -> torch.Tensor:
        return ~(self.values(state) >= self.min_distance)


class NonFinite(Criterion):
    """Unstable when positions, velocities, forces, the force term's extra outputs or the energy
    of a replica hold NaN or inf."""

    name = "non_finite"

    def __call__(self, state: MDState) -> torch.Tensor:
        arrays = [state.positions, state.velocities, *state.outputs.values()]
        arrays += [] if state.forces is None else [state.forces]
        finite = [torch.isfinite(a.reshape(state.n_atoms, -1)).all(-1) for a in arrays]
        per_atom = ~torch.stack(finite).all(0)
        bad = state.sum_per_system(per_atom.to(_F64)) > 0
        if state.potential_energy is not None:
            bad = bad | ~torch.isfinite(state.potential_energy)
        return bad


class RDFDeviation(Criterion):
    """Unstable when a window-averaged element-resolved RDF strays from the reference.

    Each call adds the RDFs of the active replicas to the current window; once ``window_fs``
    has passed since the window opened, the deviation ∫|⟨g_ab⟩ − g_ab^ref| dr (Å; the StABlE
    "RDF MAE", equal to r_max × the mean absolute error over bins) of each element pair is
    computed, and a replica is unstable when ANY pair exceeds ``max_mae``. The verdict of the
    last completed window is returned until the next one completes (all stable before the first).

    ``reference_rdf`` {(Z_a, Z_b): g [n_bins]} on bins of width ``dr`` from 0 (as from
    :func:`~stablemd.analysis.structure.reference_observables`); r_max = n_bins × dr.
    """

    name = "rdf_deviation"

    def __init__(
        self,
        reference_rdf: Mapping[tuple[int, int], torch.Tensor],
        window_fs: float = 1000.0,
        max_mae: float = 3.0,
        dr: float = DR_A,
        sigma: float = SIGMA_A,
        every: int = 1,
    ):
        super().__init__(every)
        if not reference_rdf:
            raise InputError("reference_rdf: no element pairs given")
        self.pairs = sorted(tuple(sorted(int(z) for z in pair)) for pair in reference_rdf)
        items = {tuple(sorted(int(z) for z in k)): v for k, v in reference_rdf.items()}
        self.reference = torch.stack([torch.as_tensor(items[p], dtype=_F64) for p in self.pairs])
        self.window_fs, self.max_mae = float(window_fs), float(max_mae)
        self.dr, self.sigma = float(dr), float(sigma)
        self.r_max = self.reference.shape[-1] * self.dr
        self.reset()

    def reset(self) -> None:
        """Forget the current window and the last verdict."""
        self.window_start_fs: float | None = None
        self.rdf_sum: torch.Tensor | None = None  # [n_pairs, R, n_bins]
        self.frame_count: torch.Tensor | None = None  # [R]
        self.deviation: torch.Tensor | None = None  # [R] last window's max over pairs, Å
        self.unstable: torch.Tensor | None = None  # [R]

    def _open(self, state: MDState) -> None:
        shape = (len(self.pairs), state.n_systems, self.reference.shape[-1])
        self.window_start_fs = float(state.time_fs)
        self.rdf_sum = torch.zeros(shape, dtype=_F64)
        self.frame_count = torch.zeros(state.n_systems, dtype=_F64)
        if self.unstable is None:
            self.unstable = torch.zeros(state.n_systems, dtype=torch.bool)
            self.deviation = torch.full((state.n_systems,), torch.nan, dtype=_F64)

    def __call__(self, state: MDState) -> torch.Tensor:
        if self.rdf_sum is None:
            self._open(state)
        if self.rdf_sum.shape[1] != state.n_systems:
            raise InputError(
                f"rdf_deviation: state has {state.n_systems} replicas, the window "
                f"{self.rdf_sum.shape[1]}; call reset() before reusing the criterion"
            )
        _, rdfs = radial_distribution(state, r_max=self.r_max, dr=self.dr, sigma=self.sigma)
        missing = sorted(set(rdfs) ^ set(self.pairs))
        if missing:
            raise InputError(f"reference_rdf: element pairs {missing} do not match the system")
        active = state.active.to(_F64)
        self.rdf_sum += torch.stack([rdfs[p] for p in self.pairs]) * active[:, None]
        self.frame_count += active
        if state.time_fs - self.window_start_fs >= self.window_fs - 1e-9:
            mean = self.rdf_sum / self.frame_count.clamp(min=1.0)[:, None]
            deviation = self.dr * (mean - self.reference[:, None]).abs().sum(-1).amax(0)
            judged = self.frame_count > 0
            self.deviation = torch.where(judged, deviation, self.deviation)
            self.unstable = torch.where(judged, ~(deviation <= self.max_mae), self.unstable)
            self._open(state)
        return self.unstable.clone()

    def state_dict(self) -> dict:
        """The running window and last verdict, for checkpoints."""
        keys = ("window_start_fs", "rdf_sum", "frame_count", "deviation", "unstable")
        return {k: _copy(getattr(self, k)) for k in keys}

    def load_state_dict(self, state_dict: Mapping) -> None:
        for key, value in state_dict.items():
            setattr(self, key, _copy(value))


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


#: Names of the geometric criteria, for options and configuration files.
GEOMETRIC_CRITERIA = ("bond_length_deviation", "min_nonbonded_distance")


def geometric_criterion(
    system: System,
    max_bond_deviation_A: float,
    min_distance_A: float,
    nonbonded_intramolecular: bool,
    kind: str | None = None,
    every: int = 1,
) -> Criterion:
    """The geometric instability criterion of ``system``: ``kind`` (one of
    :data:`GEOMETRIC_CRITERIA`), by default contacts for periodic boxes and bond lengths for
    molecules; ``nonbonded_intramolecular`` makes contacts count non-bonded pairs inside a
    molecule too."""
    kind = kind or ("min_nonbonded_distance" if system.periodic else "bond_length_deviation")
    if kind == "min_nonbonded_distance":
        bonds = system.bonds if nonbonded_intramolecular else None
        return MinNonbondedDistance(system.molecule_index, min_distance_A, bonds, every)
    if kind == "bond_length_deviation":
        return BondLengthDeviation(
            system.bonds, system.reference_bond_lengths, max_bond_deviation_A, every
        )
    raise InputError(f"unknown criterion {kind!r}; choose from {list(GEOMETRIC_CRITERIA)}")
