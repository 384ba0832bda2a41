"""How well a model's uncertainty is calibrated on held-out frames: coverage of its intervals,
rank correlation with the actual errors, and a plot of error against u."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from stablemd.core.files import atomic_write  # noqa: E402
from stablemd.data.database import read_frames  # noqa: E402
from stablemd.data.frames import FrameSet  # noqa: E402
from stablemd.explore.uncertainty.calibration import interval_factor  # noqa: E402
from stablemd.explore.uncertainty.estimator import Uncertainty  # noqa: E402
from stablemd.explore.uncertainty.fit import UncertaintyErrors, uncertainty_errors  # noqa: E402
from stablemd.models.potential import Potential  # noqa: E402

#: (key, what is compared, units) of each level.
LEVELS = (
    ("energy_per_atom", "total u against |ΔE|/N", "eV/atom"),
    ("forces_per_atom", "atomic u against ‖ΔF_i‖/√3", "eV/Å"),
)


def _level(u: torch.Tensor, errors: torch.Tensor, k: float) -> dict:
    rho = spearmanr(u.numpy(), errors.numpy()).statistic if len(u) > 1 else float("nan")
    return {
        "n": len(u),
        "coverage": float((errors <= k * u).double().mean()),
        "spearman": float(rho) if rho == rho else None,  # NaN (constant u) is no number
        "mean_u": float(u.mean()),
        "rmse": float(errors.pow(2).mean().sqrt()),
    }


def calibration_metrics(
    potential: Potential, uncertainty: Uncertainty, frames: FrameSet, batch_size: int = 16
) -> tuple[dict, UncertaintyErrors]:
    """Per level (``energy_per_atom``, ``forces_per_atom``): the fraction of errors inside the
    (1 − α) interval (``coverage``; nominal 1 − α), the Spearman rank correlation of u with the
    error, the mean u and the error RMSE; and the values themselves, for a plot."""
    values = uncertainty_errors(
        potential, frames, uncertainty.atomic, uncertainty.structure, uncertainty.features,
        batch_size, (uncertainty.atomic_factor, uncertainty.structure_factor),
    )  # fmt: skip
    k = interval_factor(uncertainty.calibration, uncertainty.alpha)
    metrics = {
        "calibration": uncertainty.calibration,
        "nominal_coverage": 1 - uncertainty.alpha,
        "interval": f"±{k:.3g} u",
        **interval_metrics(values, k),
    }
    return metrics, values


def interval_metrics(values: UncertaintyErrors, k: float) -> dict:
    """Per level (``energy_per_atom``, ``forces_per_atom``) of calibrated ``values`` whose
    interval is ±k·u: ``n``, ``coverage``, ``spearman``, ``mean_u`` and the error ``rmse``."""
    return {
        "energy_per_atom": _level(values.total, values.energy_errors, k),
        "forces_per_atom": _level(values.atomic, values.force_errors, k),
    }


def plot_calibration(
    values: UncertaintyErrors, k: float, path: Path, title: str | None = None
) -> None:
    """Error against u, per structure and per atom, log-log, with the line error = k·u."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    if title is not None:
        fig.suptitle(title)
    pairs = (
        (values.total, values.energy_errors, LEVELS[0]),
        (values.atomic, values.force_errors, LEVELS[1]),
    )
    for ax, (u, errors, (_, label, units)) in zip(axes, pairs, strict=True):
        ax.scatter(u.numpy(), errors.numpy(), s=4, alpha=0.5)
        low = float(min(u.min(), errors.clamp_min(1e-12).min()))
        high = float(max(u.max(), errors.max()))
        ax.plot([low, high], [k * low, k * high], "k--", lw=1, label=f"error = {k:.3g} u")
        ax.set(xscale="log", yscale="log", xlabel=f"u ({units})", ylabel=f"error ({units})")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def held_out_calibration(
    potential: Potential,
    uncertainty: Uncertainty,
    data: Path,
    indices: list[int],
    batch_size: int = 16,
    plot: Path | None = None,
) -> dict:
    """:func:`calibration_metrics` on the frames at ``indices`` of ``data`` (the held-out
    frames ``stablemd evaluate`` scores), the plot written to ``plot`` when given."""
    frames = read_frames(data)
    dtype = next(potential.parameters()).dtype
    metrics, values = calibration_metrics(
        potential, uncertainty, FrameSet([frames[i] for i in indices], dtype), batch_size
    )
    if plot is not None:
        plot_calibration(values, interval_factor(uncertainty.calibration, uncertainty.alpha), plot)
    return metrics
