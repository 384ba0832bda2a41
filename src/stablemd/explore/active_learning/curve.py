"""The learning curve of an explore run: per step, the labels, the errors on the test frames
and the coverage of the uncertainty's intervals there (``learning_curve.json`` and ``.png``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stablemd.core.files import atomic_write, write_json  # noqa: E402
from stablemd.data.frames import FrameSet  # noqa: E402
from stablemd.explore.uncertainty.estimator import Uncertainty  # noqa: E402
from stablemd.explore.uncertainty.evaluation import calibration_metrics  # noqa: E402
from stablemd.models.potential import Potential  # noqa: E402
from stablemd.training.metrics import error_metrics  # noqa: E402


def test_set_scores(
    potential: Potential, uncertainty: Uncertainty, test_sets: dict[str, FrameSet]
) -> dict:
    """Per test set: frames, energy RMSE per atom (eV), force RMSE (eV/Å) and the coverage of
    the (1 − α) interval of u per structure and per atom (nominal 1 − α)."""
    out = {}
    for name, frames in test_sets.items():
        errors = error_metrics(potential, frames, forces="conservative")
        calibration, _ = calibration_metrics(potential, uncertainty, frames)
        out[name] = {
            "frames": len(frames),
            "energy_rmse_eV_per_atom": errors["energy_per_atom_eV"]["rmse"],
            "force_rmse_eV_per_A": errors["forces_eV_per_A"]["rmse"],
            "coverage_energy": calibration["energy_per_atom"]["coverage"],
            "coverage_forces": calibration["forces_per_atom"]["coverage"],
            "nominal_coverage": calibration["nominal_coverage"],
        }
    return out


def write_learning_curve(rows: list[dict], path_json: Path, path_png: Path) -> None:
    """The rows (one per step, each with ``labels`` and ``test``) as JSON and as a plot of force
    RMSE, energy RMSE and coverage against the number of training labels."""
    write_json({"steps": rows}, path_json)
    labels = [row["labels"] for row in rows]
    names = list(rows[0]["test"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for k, name in enumerate(names):
        test = [row["test"][name] for row in rows]
        color = f"C{k}"
        axes[0].plot(labels, [1000 * t["force_rmse_eV_per_A"] for t in test], "o-", c=color,
                     label=name)  # fmt: skip
        axes[1].plot(labels, [1000 * t["energy_rmse_eV_per_atom"] for t in test], "o-", c=color,
                     label=name)  # fmt: skip
        axes[2].plot(labels, [t["coverage_forces"] for t in test], "o-", c=color,
                     label=f"{name}, per atom")  # fmt: skip
        axes[2].plot(labels, [t["coverage_energy"] for t in test], "s--", c=color,
                     label=f"{name}, per structure")  # fmt: skip
    axes[2].axhline(rows[0]["test"][names[0]]["nominal_coverage"], c="k", lw=1, ls=":",
                    label="nominal")  # fmt: skip
    axes[0].set(ylabel="force RMSE (meV/Å)", yscale="log")
    axes[1].set(ylabel="energy RMSE (meV/atom)", yscale="log")
    axes[2].set(ylabel="coverage of the u interval", ylim=(0, 1.05))
    for ax in axes:
        ax.set_xlabel("training + validation labels")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    with atomic_write(path_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
