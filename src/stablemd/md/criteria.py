"""Stability criteria: callables ``criterion(state) -> BoolTensor [n_systems]``, True = unstable.

Criteria only read the state. The geometric ones treat the replicas as copies of one structure
(atom order inside each replica as in the structure) and count a replica whose value is NaN as
unstable. Thresholds follow StABlE (paper appendix A.5): bond-length deviation 0.5 Å for
evaluation (0.25 Å while training), minimum intermolecular distance 1.2 Å, RDF deviation 3.0
over 1 ps windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch

from stablemd.errors import InputError
from stablemd.md.observables import (
    DR_A,
    SIGMA_A,
    bond_lengths,
    pair_vectors,
    radial_distribution,
    replica_positions,
)
from stablemd.md.state import MDState
from stablemd.md.velocities import temperature

_F64 = torch.float64


class Criterion(Protocol):
    name: str

    def __call__(self, state: MDState) -> torch.Tensor: ...


def _replica_frames(state: MDState, n_atoms: int, what: str) -> torch.Tensor:
    """Replica positions [R, N, 3], after checking that a replica holds ``n_atoms`` atoms."""
    frames = replica_positions(state)
    if frames.shape[1] < n_atoms:
        raise InputError(f"{what}: needs {n_atoms} atoms, a replica has {frames.shape[1]}")
    return frames


class BondLengthDeviation:
    """Unstable when max over bonds of |r_b − r_b^ref| exceeds ``max_deviation`` (Å).

    ``bonds`` [n_bonds, 2] and ``reference_lengths`` [n_bonds] Å describe one structure and apply
    to every replica of it; bond vectors use the minimum image in periodic cells.
    """

    name = "bond_length_deviation"

    def __init__(self, bonds, reference_lengths, max_deviation: float = 0.5):
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


class MinIntermolecularDistance:
    """Unstable when two atoms of different molecules come closer than ``min_distance`` (Å).

    ``molecule_index`` [n_atoms] of one structure (e.g. ``System.molecule_index``); distances
    use the minimum image in periodic cells. A single molecule is never unstable.
    """

    name = "min_intermolecular_distance"

    def __init__(self, molecule_index, min_distance: float = 1.2):
        molecules = torch.as_tensor(np.asarray(molecule_index), dtype=torch.long)
        i, j = torch.triu_indices(len(molecules), len(molecules), offset=1)
        between = molecules[i] != molecules[j]
        self.i, self.j = i[between], j[between]
        self.n_atoms = len(molecules)
        self.min_distance = float(min_distance)

    def values(self, state: MDState) -> torch.Tensor:
        """Smallest intermolecular distance per replica [n_systems] Å (inf without pairs)."""
        frames = _replica_frames(state, self.n_atoms, "molecule_index")
        if len(self.i) == 0:
            return torch.full((state.n_systems,), torch.inf, dtype=_F64)
        distances = pair_vectors(frames, self.i, self.j, state.cell, state.pbc).norm(dim=-1)
        return distances.amin(dim=-1)

    def __call__(self, state: MDState) -> torch.Tensor:
        return ~(self.values(state) >= self.min_distance)


class NonFinite:
    """Unstable when positions, velocities, forces or the energy of a replica hold NaN or inf."""

    name = "non_finite"

    def __call__(self, state: MDState) -> torch.Tensor:
        arrays = [state.positions, state.velocities]
        arrays += [] if state.forces is None else [state.forces]
        per_atom = ~torch.stack([torch.isfinite(a).all(-1) for a in arrays]).all(0)
        bad = state.sum_per_system(per_atom.to(_F64)) > 0
        if state.potential_energy is not None:
            bad = bad | ~torch.isfinite(state.potential_energy)
        return bad


class TemperatureAbove:
    """Unstable when the kinetic temperature (3N − 3 degrees of freedom) exceeds the bound (K)."""

    name = "temperature_above"

    def __init__(self, max_temperature_K: float):
        self.max_temperature_K = float(max_temperature_K)

    def values(self, state: MDState) -> torch.Tensor:
        """Kinetic temperature per replica [n_systems] K."""
        return temperature(state)

    def __call__(self, state: MDState) -> torch.Tensor:
        return ~(self.values(state) <= self.max_temperature_K)


class RDFDeviation:
    """Unstable when a window-averaged element-resolved RDF strays from the reference.

    Each call adds the RDFs of the active replicas to the current window; once ``window_fs``
    has passed since the window opened, the deviation ∫|⟨g_ab⟩ − g_ab^ref| dr (Å; the StABlE
    "RDF MAE", equal to r_max × the mean absolute error over bins) of each element pair is
    computed, and a replica is unstable when ANY pair exceeds ``max_mae``. The verdict of the
    last completed window is returned until the next one completes (all stable before the first).

    ``reference_rdf`` {(Z_a, Z_b): g [n_bins]} on bins of width ``dr`` from 0 (as from
    :func:`~stablemd.md.observables.reference_observables`); r_max = n_bins × dr.
    """

    name = "rdf_deviation"

    def __init__(
        self,
        reference_rdf: Mapping[tuple[int, int], torch.Tensor],
        window_fs: float = 1000.0,
        max_mae: float = 3.0,
        dr: float = DR_A,
        sigma: float = SIGMA_A,
    ):
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


class AnyOf:
    """Unstable when any of ``criteria`` fires; ``last_verdicts`` keeps each one's verdict.

    Criteria are keyed by their ``name`` (repeats get ``_2``, ``_3`` …). Each criterion is
    evaluated once per call, so stateful ones (:class:`RDFDeviation`) are advanced once.
    """

    name = "any_of"

    def __init__(self, *criteria: Criterion):
        if not criteria:
            raise InputError("any_of needs at least one criterion")
        self.criteria: dict[str, Criterion] = {}
        for criterion in criteria:
            key, k = criterion.name, 1
            while key in self.criteria:
                k += 1
                key = f"{criterion.name}_{k}"
            self.criteria[key] = criterion
        self.last_verdicts: dict[str, torch.Tensor] = {}

    def verdicts(self, state: MDState) -> dict[str, torch.Tensor]:
        """Each criterion's verdict [n_systems], keyed by name."""
        self.last_verdicts = {key: c(state) for key, c in self.criteria.items()}
        return self.last_verdicts

    def __call__(self, state: MDState) -> torch.Tensor:
        return torch.stack(list(self.verdicts(state).values())).any(dim=0)

    def state_dict(self) -> dict:
        return {k: c.state_dict() for k, c in self.criteria.items() if hasattr(c, "state_dict")}

    def load_state_dict(self, state_dict: Mapping) -> None:
        for key, value in state_dict.items():
            self.criteria[key].load_state_dict(value)


def any_of(*criteria: Criterion) -> AnyOf:
    """Combine criteria: unstable when any of them fires."""
    return AnyOf(*criteria)


def which_fired(verdicts: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Names of the criteria that fired, per replica (e.g. from ``AnyOf.last_verdicts``)."""
    names = list(verdicts)
    table = torch.stack([verdicts[n] for n in names], dim=1).tolist()
    return [[n for n, fired in zip(names, row, strict=True) if fired] for row in table]
