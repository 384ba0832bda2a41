"""The progress of a StABlE run as a PNG, like the paper's Figure 3a."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _learning_spans(history: list[dict]) -> list[tuple[float, float]]:
    """(first, last + 1) epochs of each run of consecutive learning epochs."""
    spans, start = [], None
    for row in history:
        if row["phase"] == "learning" and start is None:
            start = row["epoch"]
        elif row["phase"] != "learning" and start is not None:
            spans.append((start, row["epoch"]))
            start = None
    if start is not None:
        spans.append((start, history[-1]["epoch"] + 1))
    return spans


def plot_stable_training(history: list[dict], path: Path) -> None:
    """Unstable fraction per epoch (and the part the latent grade criterion flagged, when it
    is on) with learning phases shaded; L_obs on a second axis."""
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for k, (first, stop) in enumerate(_learning_spans(history)):
        ax.axvspan(first - 0.5, stop - 0.5, color="C1", alpha=0.15,
                   label="learning phase" if k == 0 else None)  # fmt: skip
    ax.plot(epochs, [row["unstable_fraction"] for row in history], "o-", color="C0", ms=3,
            label="unstable fraction")  # fmt: skip
    if "latent_unstable_fraction" in history[0]:
        ax.plot(epochs, [row["latent_unstable_fraction"] for row in history], "^--", color="C2",
                ms=3, label="flagged by the latent grade")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of unstable replicas")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    learning = [(r["epoch"], r["obs_loss"]) for r in history if not math.isnan(r["obs_loss"])]
    if learning:
        twin = ax.twinx()
        twin.plot(*zip(*learning, strict=True), "s", color="C3", ms=3, label="$L_{obs}$")
        twin.set_ylabel("observable loss $L_{obs}$", color="C3")
        twin.set_yscale("log")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
