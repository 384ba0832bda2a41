"""The CLI index along a batched MD run: an engine :class:`Observer` that reads the latent
features of the last force call (``ModelForces(potential, outputs=("features",))`` puts them
in ``state.outputs["features"]``), so it costs no second model call.

At each call the monitor evaluates H_i for the atoms of active replicas and adds H_i × (time
since its previous call) to each atom's index (:mod:`.index`, right Riemann sum). A replica
that was not active at the previous call (the first call, a replica made active again) adds
nothing, so time spent frozen never counts. Frozen replicas are skipped: their index stays as
it was and their series is NaN while they are frozen.

:class:`LatentInstabilityCriterion` is the same index as a criterion: it flags a replica once its
index passes the critical level, so that the runner freezes it.
"""

from __future__ import annotations

import torch

from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning.index import CriticalLevel, replica_index
from stablemd.md.monitoring import Criterion, Observer
from stablemd.md.state import MDState
from stablemd.models.latent_domain import INDICATORS, LatentDomain

FEATURES = "features"


def latent_grade(
    domain: LatentDomain, state: MDState, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The extrapolation grade γ [n_active_atoms] of the active replicas' atoms, from the latent
    features of the state's last force call, and each replica's largest γ [n_systems] (NaN for
    frozen replicas; inf where a feature is not finite). ``who`` names the caller in the error
    raised when the state carries no features."""
    per_replica = torch.full((state.n_systems,), float("nan"), dtype=torch.float64)
    if not bool(state.active.any()):
        return torch.empty(0, dtype=torch.float64), per_replica
    features = state.outputs.get(FEATURES)
    if features is None:
        raise InputError(
            f"{who}: the state has no latent features; run the model as "
            "ModelForces(potential, outputs=('features',))"
        )
    atoms = state.active_atoms
    grade = domain.grade(features[atoms], state.numbers[atoms])
    per_replica[state.active] = state.max_per_system(grade, atoms)[state.active]
    return grade, per_replica


class LatentInstabilityMonitor(Observer):
    """Per-atom and per-replica CLI (ps) of a run, and per call the time, each replica's CLI
    and its largest extrapolation grade (NaN for frozen replicas).

    ``indicator``: ``grade`` (γ > the domain's ``grade_threshold``) or ``box``.
    """

    name = "latent_instability"

    def __init__(self, domain: LatentDomain, indicator: str = "grade", every: int = 1):
        super().__init__(every)
        if indicator not in INDICATORS:
            raise InputError(f"unknown indicator {indicator!r}; choose from {list(INDICATORS)}")
        self.domain = domain
        self.indicator = indicator
        self.atom_index_ps: torch.Tensor | None = None  # [n_atoms]
        self.previous_time_fs: float | None = None  # time of the previous call
        self.previous_active: torch.Tensor | None = None  # [n_systems] active at that call
        self.times_ps: list[float] = []
        self.cli_ps: list[torch.Tensor] = []  # each [n_systems]
        self.max_grade: list[torch.Tensor] = []  # each [n_systems]
        self._system_index: torch.Tensor | None = None

    def _start(self, state: MDState) -> None:
        self.atom_index_ps = torch.zeros(state.n_atoms, dtype=torch.float64)
        self.previous_time_fs = state.time_fs
        self.previous_active = torch.zeros(state.n_systems, dtype=torch.bool)

    def __call__(self, state: MDState) -> None:
        if self.atom_index_ps is None:
            self._start(state)
        if self.atom_index_ps.shape[0] != state.n_atoms:
            raise InputError(
                f"{self.name}: the state has {state.n_atoms} atoms, the monitor "
                f"{self.atom_index_ps.shape[0]}"
            )
        self._system_index = state.system_index
        active = state.active
        grade, grade_per_replica = latent_grade(self.domain, state, self.name)
        if bool(active.any()):
            atoms = state.active_atoms
            if self.indicator == "grade":
                flags = grade > self.domain.grade_threshold
            else:
                features = state.outputs[FEATURES][atoms]
                flags = self.domain.outside_box(features, state.numbers[atoms])
            active_before = self.previous_active.to(torch.float64)  # bool × float is float32
            elapsed_ps = (state.time_fs - self.previous_time_fs) / 1000.0 * active_before
            step_ps = elapsed_ps[state.system_index[atoms]]
            self.atom_index_ps[atoms] += flags.to(torch.float64) * step_ps
        self.previous_time_fs, self.previous_active = state.time_fs, active.clone()
        cli = self.replica_index_ps()
        cli[~active] = float("nan")
        self.times_ps.append(state.time_fs / 1000.0)
        self.cli_ps.append(cli)
        self.max_grade.append(grade_per_replica)

    def at(self, state: MDState, key: str = "cli_ps") -> torch.Tensor:
        """``cli_ps`` or ``max_grade`` [n_systems] of this monitor's call on ``state``, for a
        reader of the same step (a trajectory writer called after it)."""
        if not self.times_ps or self.times_ps[-1] != state.time_fs / 1000.0:
            raise RuntimeError(
                f"{self.name}: not called at {state.time_fs:g} fs; call it before its readers, "
                "at the same steps"
            )
        return {"cli_ps": self.cli_ps, "max_grade": self.max_grade}[key][-1]

    def replica_index_ps(self) -> torch.Tensor:
        """CLI_r now [n_systems] (ps): the mean of the atoms' index over each replica."""
        if self.atom_index_ps is None or self._system_index is None:
            raise InputError(f"{self.name}: not called yet")
        n_systems = self.previous_active.shape[0]
        return replica_index(self.atom_index_ps, self._system_index, n_systems)

    def series(self) -> dict[str, torch.Tensor]:
        """``times_ps`` [n_calls], ``cli_ps`` and ``max_grade`` [n_calls, n_systems] (NaN
        after a replica was frozen), for plots of CLI against time and for lead times."""
        if not self.times_ps:
            raise InputError(f"{self.name}: not called yet")
        return {
            "times_ps": torch.tensor(self.times_ps, dtype=torch.float64),
            "cli_ps": torch.stack(self.cli_ps),
            "max_grade": torch.stack(self.max_grade),
        }

    def state_dict(self) -> dict:
        if self.atom_index_ps is None:
            return {"started": False}
        return {
            "started": True,
            "atom_index_ps": self.atom_index_ps.clone(),
            "previous_time_fs": self.previous_time_fs,
            "previous_active": self.previous_active.clone(),
            "system_index": self._system_index.clone(),
            **{k: v.clone() for k, v in self.series().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if not state["started"]:
            return
        self.atom_index_ps = state["atom_index_ps"].clone()
        self.previous_time_fs = state["previous_time_fs"]
        self.previous_active = state["previous_active"].clone()
        self._system_index = state["system_index"].clone()
        self.times_ps = state["times_ps"].tolist()
        self.cli_ps = list(state["cli_ps"].clone())
        self.max_grade = list(state["max_grade"].clone())


class LatentInstabilityCriterion(Criterion):
    """Unstable once a replica's CLI passes the critical level: CLI_r(t) > L · max(1, t/T_cal)
    with t the run's time (:class:`~.index.CriticalLevel`), so the runner freezes it and records
    ``name`` as the reason. The index is accumulated by its own :class:`LatentInstabilityMonitor`
    (``self.monitor``: the series, the checkpoint)."""

    name = "cli_above_critical_level"

    def __init__(
        self,
        domain: LatentDomain,
        critical: CriticalLevel,
        indicator: str = "grade",
        every: int = 1,
    ):
        super().__init__(every)
        self.monitor = LatentInstabilityMonitor(domain, indicator, every)
        self.critical = critical

    def __call__(self, state: MDState) -> torch.Tensor:
        self.monitor(state)
        level = float(self.critical.at(state.time_fs / 1000.0))
        return self.monitor.cli_ps[-1] > level  # NaN (frozen) compares False

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.monitor.load_state_dict(state)
