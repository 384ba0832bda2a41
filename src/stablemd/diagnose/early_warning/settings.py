"""The early warning of an MD run, as ``stablemd stability`` and ``stablemd simulate`` both use
it: the settings that choose it, the warning stored with the model that they select, the
monitor that accumulates it from the features of the run's own forward pass, its fingerprint
(for a run's recorded options) and the run's record (:func:`~.report.early_warning_record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning.model_file import EarlyWarning, stored_early_warning
from stablemd.diagnose.early_warning.monitor import (
    LatentInstabilityCriterion,
    LatentInstabilityMonitor,
)
from stablemd.diagnose.early_warning.report import early_warning_record
from stablemd.md.monitoring import Monitor
from stablemd.models.latent_domain import INDICATORS
from stablemd.models.potential import Potential


class EarlyWarningSettings(BaseModel):
    """Whether and how a run accumulates each replica's CLI index (docs/early_warning.md)."""

    early_warning: bool | None = Field(
        None,
        description="accumulate the CLI index of each replica (docs/early_warning.md); None: "
        "for every model that carries a latent domain; True: refuse a model without one",
    )
    early_warning_indicator: Literal[INDICATORS] = Field(
        "grade", description="the indicator of the index: extrapolation grade or box"
    )
    freeze_on_warning: bool = Field(
        False, description="freeze a replica once its CLI passes the critical level"
    )


def model_early_warning(
    potential: Potential, settings: EarlyWarningSettings, model: str = "this model"
) -> EarlyWarning | None:
    """The early warning a run of ``potential`` (named ``model`` in errors) uses with
    ``settings``: the one stored with the model, unless ``settings.early_warning`` is False;
    refused when asked for (``early_warning`` True, ``freeze_on_warning``) and the model has
    none, or no critical level to freeze at."""
    if settings.early_warning is False:
        if settings.freeze_on_warning:
            raise InputError("--freeze-on-warning needs the early warning; drop --no-early-warning")
        return None
    stored = stored_early_warning(potential)
    asked = settings.early_warning or settings.freeze_on_warning
    if stored is None and asked:
        option = "--freeze-on-warning" if settings.freeze_on_warning else "--early-warning"
        raise InputError(
            f"{option}: {model} carries no latent domain; add one with stablemd early-warning "
            "fit --model ... --data <its training data>"
        )
    indicator = settings.early_warning_indicator
    if (
        stored is not None
        and settings.freeze_on_warning
        and indicator not in stored.critical_levels
    ):
        raise InputError(
            f"--freeze-on-warning: {model} has no critical level (its training data held no "
            "reference MD trajectories to calibrate one on)"
        )
    return stored


def early_warning_id(early_warning: EarlyWarning | None) -> str | None:
    """The early warning's fingerprint (None: none), to recognise it on resume."""
    return None if early_warning is None else early_warning.fingerprint()


def early_warning_monitor(
    early_warning: EarlyWarning, settings: EarlyWarningSettings, every: int
) -> LatentInstabilityMonitor | LatentInstabilityCriterion:
    """The monitor of the CLI index every ``every`` steps: a criterion that freezes a replica at
    the critical level with ``settings.freeze_on_warning``, else an observer. The run's force
    term must give the ``features`` output (``settings.force_term(..., outputs=("features",))``)."""
    indicator = settings.early_warning_indicator
    if settings.freeze_on_warning:
        return LatentInstabilityCriterion(
            early_warning.domain, early_warning.critical_levels[indicator], indicator, every
        )
    return LatentInstabilityMonitor(early_warning.domain, indicator, every)


def latent_index(monitors: Sequence[Monitor]) -> LatentInstabilityMonitor:
    """The monitor that accumulates the CLI index among ``monitors`` (inside the criterion when
    replicas freeze on the warning)."""
    for monitor in monitors:
        if isinstance(monitor, LatentInstabilityCriterion):
            return monitor.monitor
        if isinstance(monitor, LatentInstabilityMonitor):
            return monitor
    raise ValueError("no early-warning monitor among the monitors")


def run_early_warning_record(
    early_warning: EarlyWarning,
    settings: EarlyWarningSettings,
    monitors: Sequence[Monitor],
    failure_ps: Sequence[float | None],
    failure_reasons: Sequence[str | None],
    run_length_ps: float,
) -> dict:
    """The record (:func:`~.report.early_warning_record`) of a run's index, found among its
    ``monitors``, against each replica's failure time (ps; None: never) and reason."""
    indicator = settings.early_warning_indicator
    return early_warning_record(
        latent_index(monitors).series(), early_warning.critical_levels.get(indicator),
        failure_ps, failure_reasons, run_length_ps, indicator,
        early_warning.domain.grade_threshold,
    )  # fmt: skip
