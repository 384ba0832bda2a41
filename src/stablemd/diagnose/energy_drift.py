"""Does MD with these forces conserve energy, and does a thermostat hide it if not?

- **NVE drift**: batched velocity-Verlet MD with any force term, recording each replica's
  conserved quantity C = E_pot + E_kin and kinetic energy. The least-squares slope of C
  (eV/atom/ps) is the power the forces inject (METHODS.md §3: P = ΔC/Δt), and the score
  |slope × duration| / std(E_kin) (mlipaudit's NVE benchmark) compares the drift over the run
  with the natural fluctuation of the kinetic energy: a conservative model integrated stably
  scores ≤ 1. The kinetic temperature's drift (K/ps) is the paper's Fig. 2 (PET-NC heats by
  about 7 K/ps from 300 K).
- **Per-element temperatures** under a thermostat: a global thermostat (CSVR) keeps the total
  kinetic temperature while non-conservative forces pump energy into some elements, so the
  temperatures of H and O drift apart (the paper: up to 10 % in water).

Energy units eV, time fs (rates per ps), temperatures K; all numbers float64. The kinetic
energy uses the engine's conversion (:data:`stablemd.md.state.AMU_A2_PER_FS2_IN_EV`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.md.forces import ForceTerm
from stablemd.md.integrators import Integrator, VelocityVerlet
from stablemd.md.monitoring import Observer
from stablemd.md.runner import run
from stablemd.md.starts import initial_state
from stablemd.md.state import AMU_A2_PER_FS2_IN_EV, MDState
from stablemd.md.velocities import temperature
from stablemd.monitors.criteria import NonFinite

#: A run passes the NVE drift test when its mean score is at most this.
SCORE_THRESHOLD = 1.0


def _start(
    start: MDState | Sequence[Atoms], replicas: int, temperature_K: float, seed: int
) -> MDState:
    """``start`` itself, or replicas of the structures with Maxwell–Boltzmann velocities."""
    if isinstance(start, MDState):
        return start.clone()
    if len(start) == 0:
        raise InputError("no start structures given")
    return initial_state(list(start), replicas, temperature_K, seed)


class NonFiniteRun(InputError):
    """A replica turned non-finite too early for its numbers to mean anything: the force field
    failed the check (unlike a bad setting, which is the caller's error)."""


def _check_run(n_steps: int, every: int) -> None:
    if n_steps < 2 * every or every < 1:
        raise InputError(
            f"need every ≥ 1 and at least two recording intervals, got {n_steps} steps "
            f"recorded every {every}"
        )


def least_squares_slope(time: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Slope of the least-squares line through ``values`` [n_t, ...] against ``time`` [n_t]
    (per column), in units of values per unit of time."""
    time = np.asarray(time, dtype=np.float64)
    if len(time) < 2 or np.ptp(time) == 0:
        raise InputError("a slope needs at least two distinct times")
    centred = time - time.mean()
    values = np.asarray(values, dtype=np.float64)
    shape = (-1,) + (1,) * (values.ndim - 1)
    return (centred.reshape(shape) * (values - values.mean(0))).sum(0) / np.square(centred).sum()


# ----------------------------------------------------------------------------------------------
# Observers


class EnergyRecorder(Observer):
    """Records, per replica, the integrator's conserved quantity (eV), the kinetic energy (eV)
    and the kinetic temperature (K, 3N − 3 degrees of freedom), with the time (fs) and which
    replicas were active."""

    name = "energy_recorder"

    def __init__(self, integrator: Integrator, every: int = 1):
        super().__init__(every)
        self.integrator = integrator
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in self._keys}

    _keys = ("time_fs", "conserved", "kinetic", "temperature", "active")

    def __call__(self, state: MDState) -> None:
        values = (
            torch.tensor(state.time_fs, dtype=torch.float64),
            self.integrator.conserved_energy(state).detach().clone(),
            state.kinetic_energy().detach().clone(),
            temperature(state).detach().clone(),
            state.active.clone(),
        )
        for key, value in zip(self._keys, values, strict=True):
            self.rows[key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        """The recorded series: ``time_fs`` [n_t] and the others [n_t, n_systems]."""
        return {k: torch.stack(v).numpy() for k, v in self.rows.items()}

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.rows.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = {k: list(state_dict[k]) for k in self._keys}


def element_temperatures(state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
    """The elements of the state [n_elements] and the kinetic temperature of each element in
    each replica [n_systems, n_elements], K.

    T_Z = Σ_{i∈Z} m_i |v_i − v_cm|² / (k_B g_Z) with g_Z = 3 Σ_{i∈Z} (1 − m_i/M): the motion
    of each replica's centre of mass (velocity v_cm, mass M) is taken out, and g_Z is the share
    of the 3N − 3 internal degrees of freedom that element Z holds (at equilibrium
    ⟨m_i |v_i − v_cm|²⟩ = 3 k_B T (1 − m_i/M)), so every element reads T at equilibrium and
    the g-weighted mean of the T_Z is the replica's kinetic temperature. The plain
    3 k_B N_Z of the paper reads low for heavy atoms in small molecules (carbon in ethanol by
    26 %). Every replica must hold every element, and at least two atoms.
    """
    elements = torch.unique(state.numbers)
    counts = state.atoms_per_system
    if bool((counts < 2).any()):
        raise InputError("per-element temperatures need at least two atoms in every replica")
    total_mass = state.sum_per_system(state.masses)
    momentum = state.sum_per_system(state.masses[:, None] * state.velocities)
    internal = state.velocities - (momentum / total_mass[:, None])[state.system_index]
    twice_kinetic = state.masses * internal.square().sum(1) * AMU_A2_PER_FS2_IN_EV  # eV
    dof = 3 * (1 - state.masses / total_mass[state.system_index])
    column = torch.searchsorted(elements, state.numbers)
    flat = state.system_index * len(elements) + column
    size = state.n_systems * len(elements)
    energy = torch.zeros(size, dtype=torch.float64).index_add(0, flat, twice_kinetic)
    share = torch.zeros(size, dtype=torch.float64).index_add(0, flat, dof)
    if bool((share == 0).any()):
        s, z = divmod(int(torch.nonzero(share == 0)[0]), len(elements))
        raise InputError(
            f"replica {s} has no atom of element {int(elements[z])}; per-element "
            "temperatures need the same elements in every replica"
        )
    temperatures = energy / (KB_EV_PER_K * share)
    return elements, temperatures.view(state.n_systems, len(elements))


class ElementTemperatureRecorder(Observer):
    """Records :func:`element_temperatures` [n_systems, n_elements] K with the time (fs)."""

    name = "element_temperatures"

    def __init__(self, every: int = 1):
        super().__init__(every)
        self.elements: torch.Tensor | None = None
        self.time_fs: list[float] = []
        self.temperatures: list[torch.Tensor] = []

    def __call__(self, state: MDState) -> None:
        self.elements, values = element_temperatures(state)
        self.time_fs.append(float(state.time_fs))
        self.temperatures.append(values)

    def state_dict(self) -> dict:
        return {
            "elements": self.elements,
            "time_fs": list(self.time_fs),
            "temperatures": list(self.temperatures),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.elements = state_dict["elements"]
        self.time_fs = list(state_dict["time_fs"])
        self.temperatures = list(state_dict["temperatures"])


# ----------------------------------------------------------------------------------------------
# NVE drift


@dataclass
class EnergyDrift:
    """NVE energy conservation of a force term, per replica [n_replicas] unless said otherwise.

    Series (for plots): ``time_fs`` [n_t]; ``conserved_eV``, ``kinetic_eV`` and
    ``temperature_K`` [n_t, n_replicas]. ``n_atoms`` per replica; ``duration_ps`` the time each
    replica was integrated before it turned non-finite (``non_finite``: its last frame was not
    finite or not integrated) or the run ended; every fit uses that part only.

    ``slope_eV_per_atom_per_ps``: least-squares slope of the conserved quantity per atom
    (``mean_slope_eV_per_atom_per_ps`` over replicas). ``score`` = |slope × n_atoms ×
    duration| / std(E_kin) (``mean_score``, ``max_score``); ``passed``: mean score ≤
    :data:`SCORE_THRESHOLD`. ``temperature_drift_K_per_ps``: slope of the kinetic temperature
    (``mean_temperature_drift_K_per_ps``).
    """

    time_fs: np.ndarray
    conserved_eV: np.ndarray
    kinetic_eV: np.ndarray
    temperature_K: np.ndarray
    n_atoms: np.ndarray
    duration_ps: np.ndarray
    non_finite: np.ndarray
    slope_eV_per_atom_per_ps: np.ndarray
    mean_slope_eV_per_atom_per_ps: float
    score: np.ndarray
    mean_score: float
    max_score: float
    passed: bool
    temperature_drift_K_per_ps: np.ndarray
    mean_temperature_drift_K_per_ps: float


def energy_drift_from_series(
    time_fs: np.ndarray,
    conserved_eV: np.ndarray,
    kinetic_eV: np.ndarray,
    temperature_K: np.ndarray,
    n_atoms: np.ndarray,
    active: np.ndarray | None = None,
) -> EnergyDrift:
    """Fit the drift of recorded series: ``time_fs`` [n_t], the others [n_t, n_replicas],
    ``n_atoms`` [n_replicas]; ``active`` [n_t, n_replicas] marks the frames to use (default:
    all). Non-finite frames are left out (a replica found non-finite is recorded once before
    the runner freezes it); a replica with fewer than three usable frames is refused."""
    time_fs = np.asarray(time_fs, dtype=np.float64)
    conserved, kinetic, temp = (
        np.asarray(x, dtype=np.float64) for x in (conserved_eV, kinetic_eV, temperature_K)
    )
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    used = np.ones(conserved.shape, dtype=bool) if active is None else np.asarray(active, bool)
    used = used & np.isfinite(conserved) & np.isfinite(kinetic) & np.isfinite(temp)
    n_rep = len(n_atoms)
    slope, score, t_drift, duration = (np.zeros(n_rep) for _ in range(4))
    for k in range(n_rep):
        rows = used[:, k]
        if rows.sum() < 3:
            raise NonFiniteRun(
                f"replica {k} has {int(rows.sum())} finite frames, too few to fit a drift "
                "(it turned non-finite early: try a shorter time step)"
            )
        time_ps = time_fs[rows] / 1000
        duration[k] = np.ptp(time_ps)
        total_slope = float(least_squares_slope(time_ps, conserved[rows, k]))  # eV/ps
        slope[k] = total_slope / n_atoms[k]
        spread = kinetic[rows, k].std()
        if not spread > 0:
            raise InputError(f"replica {k}: the kinetic energy never changed (no forces?)")
        score[k] = abs(total_slope * duration[k]) / spread
        t_drift[k] = least_squares_slope(time_ps, temp[rows, k])
    return EnergyDrift(
        time_fs=time_fs,
        conserved_eV=conserved,
        kinetic_eV=kinetic,
        temperature_K=temp,
        n_atoms=n_atoms,
        duration_ps=duration,
        non_finite=~used[-1],
        slope_eV_per_atom_per_ps=slope,
        mean_slope_eV_per_atom_per_ps=float(slope.mean()),
        score=score,
        mean_score=float(score.mean()),
        max_score=float(score.max()),
        passed=bool(score.mean() <= SCORE_THRESHOLD),
        temperature_drift_K_per_ps=t_drift,
        mean_temperature_drift_K_per_ps=float(t_drift.mean()),
    )


def nve_energy_drift(
    term: ForceTerm,
    start: MDState | Sequence[Atoms],
    timestep_fs: float = 0.5,
    n_steps: int = 2000,
    every: int = 10,
    replicas: int = 4,
    temperature_K: float = 300.0,
    seed: int = 0,
    integrator: Integrator | None = None,
) -> EnergyDrift:
    """Run ``n_steps`` of NVE velocity Verlet with ``term`` (any force term) from ``start`` (a
    state, or structures from which ``replicas`` replicas at ``temperature_K`` are drawn with
    ``seed``), record every ``every`` steps and fit the drift
    (:func:`energy_drift_from_series`). ``integrator`` replaces velocity Verlet of
    ``timestep_fs`` (e.g. RESPA without a thermostat, for multiple time stepping)."""
    _check_run(n_steps, every)
    state = _start(start, replicas, temperature_K, seed)
    integrator = integrator or VelocityVerlet(timestep_fs)
    recorder = EnergyRecorder(integrator, every)
    result = run(state, integrator, term, n_steps, monitors=[NonFinite(), recorder], progress=False)
    series = recorder.arrays()
    drift = energy_drift_from_series(
        series["time_fs"],
        series["conserved"],
        series["kinetic"],
        series["temperature"],
        state.atoms_per_system.numpy(),
        active=series["active"],
    )
    # a run whose replicas all froze ends early, after its last finite frame: ask the runner
    drift.non_finite |= ~result.state.active.numpy()
    return drift


# ----------------------------------------------------------------------------------------------
# Per-element temperatures under a thermostat


@dataclass
class ElementTemperatures:
    """Kinetic temperature of each element under a thermostat.

    ``elements`` [n_elements] atomic numbers; ``time_fs`` [n_t] and ``temperature_K``
    [n_t, n_replicas, n_elements] (for plots); ``total_temperature_K`` [n_t, n_replicas] the
    replicas' kinetic temperature. Over the frames after ``discard_fs``:
    ``mean_per_replica_K`` [n_replicas, n_elements], ``mean_K`` [n_elements] (over replicas
    too), ``drift_K_per_ps`` [n_replicas, n_elements] (least-squares slopes) and
    ``mean_drift_K_per_ps`` [n_elements].
    """

    elements: np.ndarray
    time_fs: np.ndarray
    temperature_K: np.ndarray
    total_temperature_K: np.ndarray
    mean_per_replica_K: np.ndarray
    mean_K: np.ndarray
    drift_K_per_ps: np.ndarray
    mean_drift_K_per_ps: np.ndarray


def thermostat_element_temperatures(
    term: ForceTerm,
    start: MDState | Sequence[Atoms],
    integrator: Integrator,
    n_steps: int,
    every: int = 10,
    discard_fs: float = 0.0,
    replicas: int = 4,
    temperature_K: float = 300.0,
    seed: int = 0,
) -> ElementTemperatures:
    """Run ``n_steps`` of ``integrator`` (with its thermostat, e.g. CSVR from
    :func:`~stablemd.md.integrators.make_integrator`) and ``term`` from ``start`` (a state, or
    structures drawn as in :func:`nve_energy_drift`), recording the per-element temperatures
    every ``every`` steps; means and drifts leave out the first ``discard_fs``. Raises if a
    replica turns non-finite (its temperatures would mean nothing)."""
    _check_run(n_steps, every)
    state = _start(start, replicas, temperature_K, seed)
    elements = ElementTemperatureRecorder(every)
    totals = EnergyRecorder(integrator, every)
    result = run(
        state, integrator, term, n_steps, monitors=[NonFinite(), elements, totals], progress=False
    )
    if not bool(result.state.active.all()):
        k = int(torch.nonzero(~result.state.active)[0])
        raise NonFiniteRun(f"replica {k} turned non-finite at {result.unstable_time_fs[k]:g} fs")
    time_fs = np.array(elements.time_fs)
    values = torch.stack(elements.temperatures).numpy()
    kept = time_fs >= discard_fs + time_fs[0]
    if kept.sum() < 2:
        raise InputError(f"discard_fs = {discard_fs} leaves fewer than two frames")
    drift = least_squares_slope(time_fs[kept] / 1000, values[kept])
    return ElementTemperatures(
        elements=elements.elements.numpy().astype(np.int64),
        time_fs=time_fs,
        temperature_K=values,
        total_temperature_K=totals.arrays()["temperature"],
        mean_per_replica_K=values[kept].mean(0),
        mean_K=values[kept].mean((0, 1)),
        drift_K_per_ps=drift,
        mean_drift_K_per_ps=drift.mean(0),
    )
