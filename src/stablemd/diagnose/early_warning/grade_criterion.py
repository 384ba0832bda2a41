"""An instantaneous latent criterion: a replica is unstable when the largest extrapolation grade
γ of its atoms (:mod:`stablemd.models.latent_domain`), in the latent features of the run's own
forward pass (``ModelForces(potential, outputs=("features",))``), exceeds ``max_grade``.

Unlike the cumulative index (:mod:`.monitor`) nothing accumulates: the verdict depends on the
state of the moment only, so the criterion has no state of its own to checkpoint, and a run
rewound to earlier states (StABlE's anchors) needs no rewound monitor. Its :attr:`domain` may be
replaced between runs, as StABlE does when it refits the domain for new weights.
"""

from __future__ import annotations

import math

import torch

from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning.monitor import latent_grade
from stablemd.md.monitoring import Criterion
from stablemd.md.state import MDState
from stablemd.models.latent_domain import LatentDomain

#: Default ``max_grade``: pacemaker's grade at which it stops MD (docs/early_warning.md).
MAX_GRADE = 25.0


class LatentGradeCriterion(Criterion):
    """Unstable when max_i γ_i > ``max_grade`` over the replica's atoms (non-finite features
    have γ = inf, so they are flagged too). ``max_grade`` must be finite and above 1, the grade
    that training atoms reach by construction."""

    name = "latent_grade_above_max"

    def __init__(self, domain: LatentDomain | None, max_grade: float = MAX_GRADE, every: int = 1):
        super().__init__(every)
        if not (math.isfinite(max_grade) and max_grade > 1.0):
            raise InputError(f"max_grade must be a finite number above 1, got {max_grade}")
        self.domain = domain
        self.max_grade = float(max_grade)

    def values(self, state: MDState) -> torch.Tensor:
        """Each replica's largest γ [n_systems] (NaN for frozen replicas)."""
        if self.domain is None:
            raise InputError(f"{self.name}: no latent domain to grade with; set its domain first")
        return latent_grade(self.domain, state, self.name)[1]

    def __call__(self, state: MDState) -> torch.Tensor:
        return self.values(state) > self.max_grade  # NaN (frozen) compares False
