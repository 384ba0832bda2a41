"""The explore loop's per-step coverage of conformational space, for systems that name their
backbone dihedrals (alanine dipeptide): the Ramachandran coverage
(:func:`stablemd.analysis.ramachandran.ramachandran_coverage`) of the pool's frames and of
every label so far, stored in the learning curve under ``step_metrics``, and their
Ramachandran plot, ``ramachandran.png`` in the step's directory."""

from __future__ import annotations

from stablemd.analysis.ramachandran import (
    BACKBONE,
    phi_psi,
    ramachandran_coverage,
    ramachandran_plot,
)
from stablemd.data.database import read_frames
from stablemd.explore.active_learning.loop import StepContext, StepMetrics
from stablemd.systems.system import System


def ramachandran_metrics(system: System) -> StepMetrics | None:
    """The hook for ``system`` (None when it names no φ and ψ): per step, the coverage of the
    labelled set (``labelled``) and of the pool's candidate frames (``pool``, when it ran), and
    the plot of both (the pool sampled, every label so far as points)."""
    if not all(name in system.dihedrals for name in BACKBONE):
        return None

    def metrics(context: StepContext) -> dict:
        labelled = read_frames(context.train_db)
        values = {"labelled": ramachandran_coverage(labelled, system)}
        if context.pool is not None and context.pool.candidates:
            frames = [candidate.atoms for candidate in context.pool.candidates]
            values["pool"] = ramachandran_coverage(frames, system)
            ramachandran_plot(
                phi_psi(frames, system), phi_psi(labelled, system),
                context.directory / "ramachandran.png",
                title=f"explore step {context.step}: pool (sampled) and every label so far",
            )  # fmt: skip
        return values

    return metrics
