"""A CLI-inspired early-warning index: the cumulative latent instability index, its critical
level and saturation (:mod:`.index`), the MD observer that accumulates it and the criterion that
freezes at the critical level (:mod:`.monitor`), the instantaneous criterion on the largest
grade (:mod:`.grade_criterion`, StABlE's latent trigger), the domain and level stored with a model
(:mod:`.model_file`) and a run's record and plot (:mod:`.report`). The natural interpolation
domain itself lives beside the model it describes (:mod:`stablemd.models.latent_domain`).
See docs/early_warning.md."""

from stablemd.diagnose.early_warning.grade_criterion import LatentGradeCriterion
from stablemd.diagnose.early_warning.index import (
    CriticalLevel,
    calibrate_critical_level,
    cumulative_index,
    first_crossing,
    is_saturated,
    lead_times,
    trailing_rate,
)
from stablemd.diagnose.early_warning.monitor import (
    LatentInstabilityCriterion,
    LatentInstabilityMonitor,
)
from stablemd.models.latent_domain import (
    LatentDomain,
    fit_latent_domain,
    latent_features,
    maxvol,
)

__all__ = [
    "CriticalLevel",
    "LatentDomain",
    "LatentGradeCriterion",
    "LatentInstabilityCriterion",
    "LatentInstabilityMonitor",
    "calibrate_critical_level",
    "cumulative_index",
    "first_crossing",
    "fit_latent_domain",
    "is_saturated",
    "latent_features",
    "lead_times",
    "maxvol",
    "trailing_rate",
]
