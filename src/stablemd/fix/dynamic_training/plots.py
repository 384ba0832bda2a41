"""Force error against rollout step, one line per window size (the paper's Figure 2)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_rollout_errors(curves: dict[str, dict], path: Path, title: str = "") -> None:
    """``curves``: label → a :func:`~stablemd.fix.dynamic_training.validation.
    rollout_force_errors` result; overall force MAE (meV/Å) against step, and per element."""
    first = next(iter(curves.values()))
    elements = list(first["per_element"])
    fig, axes = plt.subplots(1, 1 + len(elements), figsize=(4 * (1 + len(elements)), 3.6))
    for k, (label, curve) in enumerate(curves.items()):
        time = [i * curve["frame_spacing_fs"] for i in range(len(curve["mae_per_step"]))]
        series = [curve["mae_per_step"]] + [curve["per_element"][e] for e in elements]
        for ax, values in zip(axes, series, strict=True):
            shown = [1000 * v if math.isfinite(v) else math.nan for v in values]
            ax.plot(time, shown, color=f"C{k}", label=label)
    for ax, name in zip(axes, ["all atoms", *elements], strict=True):
        ax.set_xlabel("rollout time (fs)")
        ax.set_ylabel(f"force MAE, {name} (meV/Å)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
