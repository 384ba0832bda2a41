"""The learning curve of a training run as a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curve(history: list[dict], path: Path) -> None:
    """Validation force MAE (meV/Å) and energy MAE per atom (meV) against epoch, log scale."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_f, ax_e) = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
    ax_f.plot(epochs, [1000 * row["val_forces_mae_eV_per_A"] for row in history], color="C0")
    ax_f.set_ylabel("validation force MAE (meV/Å)")
    ax_e.plot(epochs, [1000 * row["val_energy_mae_per_atom_eV"] for row in history], color="C1")
    ax_e.set_ylabel("validation energy MAE (meV/atom)")
    for ax in (ax_f, ax_e):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
