"""Several models side by side: one stability run each, then the summary, plots and table."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ase import Atoms

from stablemd.cli.output import console
from stablemd.md.observables import reference_observables
from stablemd.models.registry import load_potential
from stablemd.stability.benchmark import H_R_MAX_A, StabilitySettings, h_r_mae, run_stability
from stablemd.stability.diffusion import DIFFUSION_WINDOW_PS
from stablemd.stability.report import (
    plot_h_r_comparison,
    plot_survival,
    stability_table,
    write_summary,
)
from stablemd.systems.system import System


def compare_models(
    models: dict[str, Path],
    system: System,
    starts: list[Atoms],
    reference: list[Atoms] | None,
    settings: StabilitySettings,
    out: Path,
    progress: bool = True,
) -> dict[str, dict]:
    """Run each model (label → file) into ``out/label``; write ``out/summary.json``,
    ``survival.png`` and (with ``reference`` frames) ``h_r.png``; print the table.

    Returns per label the summary, model path, speed and h(r) MAE against the reference.
    """
    reference_h_r = None if reference is None else reference_observables(reference, r_max=H_R_MAX_A)
    summaries, rows, curves = {}, {}, {}
    temperature = settings.temperature_K
    for label, path in models.items():
        console.rule(
            f"{label}: {settings.replicas} × {system.name} at {temperature:g} K "
            f"for {settings.time_ps:g} ps"
        )
        result = run_stability(
            load_potential(path), system, starts, settings, out / label, progress
        )
        summaries[label] = result.summary
        rows[label] = {
            **asdict(result.summary),
            "model": str(path),
            "steps_per_s": result.steps_per_s,
            "atom_steps_per_s": result.steps_per_s * settings.replicas * len(system.atoms),
        }
        if result.diffusivity_cm2_per_s is not None:
            rows[label]["diffusivity_cm2_per_s"] = result.diffusivity_cm2_per_s
        if result.h_r is not None and reference_h_r is not None:
            curves[label] = result.h_r
            dr = float(reference_h_r.r[1] - reference_h_r.r[0])
            rows[label]["h_r_mae"] = h_r_mae(
                reference_h_r.h_r.new_tensor(result.h_r), reference_h_r.h_r, dr
            )

    write_summary(out / "summary.json", {"settings": asdict(settings), **rows})
    plot_survival(summaries, out / "survival.png", title=f"{system.name}, {temperature:g} K")
    if curves:
        plot_h_r_comparison(
            reference_h_r.r, reference_h_r.h_r, curves, out / "h_r.png",
            title=f"{system.name}, {temperature:g} K: h(r) over the stable part",
        )  # fmt: skip
    console.print(stability_table(summaries))
    for label, row in rows.items():
        if "h_r_mae" in row:
            console.print(
                f"{label}: h(r) MAE {row['h_r_mae']:.4f}, {row['steps_per_s']:.1f} steps/s"
            )
        if "diffusivity_cm2_per_s" in row:
            console.print(f"{label}: {_diffusivity_text(row['diffusivity_cm2_per_s'])}")
    console.print(f"summary: {out / 'summary.json'}   plots: {out / 'survival.png'}")
    return rows


def _diffusivity_text(values: dict[str, float | None]) -> str:
    parts = [f"D({symbol}) {'n/a' if d is None else f'{d:.3g}'}" for symbol, d in values.items()]
    return (
        ", ".join(parts) + f" cm²/s (MSD over lags of {DIFFUSION_WINDOW_PS / 2:g}–"
        f"{DIFFUSION_WINDOW_PS:g} ps, stable parts; n/a: no replica stable that long)"
    )
