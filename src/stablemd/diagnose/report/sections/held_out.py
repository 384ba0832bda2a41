"""The report's held-out errors: energy and force errors per element on frames the model never
saw, with a verdict on the worst element's force MAE."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure as MatplotlibFigure

from stablemd.diagnose.held_out import HeldOutErrors
from stablemd.diagnose.report.model import Figure, Section, Table, Verdict, status_above
from stablemd.training.metrics import FORCE_KEYS

#: Default force-MAE thresholds (eV/Å) of the worst element; see docs/diagnose.md. Potentials
#: that run stable MD of small molecules reach 0.01–0.05 eV/Å on held-out frames (MD17-like
#: data); above 0.1 MD often drifts, above 0.3 it rarely survives picoseconds.
FORCE_MAE_WARN_EV_PER_A = 0.1
FORCE_MAE_FAIL_EV_PER_A = 0.3


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _force_bar_plot(per_element: dict, warn: float, fail: float) -> MatplotlibFigure:
    """Force MAE and RMSE per element (meV/Å) with the verdict's thresholds as lines."""
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    elements = list(per_element)
    x = np.arange(len(elements))
    mae = [1000 * (per_element[e]["mae"] if math.isfinite(per_element[e]["mae"]) else 0.0)
           for e in elements]  # fmt: skip
    rmse = [1000 * (per_element[e]["rmse"] if math.isfinite(per_element[e]["rmse"]) else 0.0)
            for e in elements]  # fmt: skip
    ax.bar(x - 0.2, mae, width=0.4, color="tab:blue", label="MAE")
    ax.bar(x + 0.2, rmse, width=0.4, color="tab:blue", alpha=0.45, label="RMSE")
    top = max([*mae, *rmse, 1e-9])
    # a threshold far above every bar would flatten them: draw those within reach only
    lines = ((1000 * warn, "tab:orange", "warn"), (1000 * fail, "tab:red", "fail"))
    shown = [line for line in lines if line[0] <= 1.3 * top]
    for value, colour, name in shown:
        ax.axhline(value, color=colour, lw=1.2, ls="--", label=f"{name} threshold")
    ax.set_xticks(x, elements)
    ax.set_ylabel("Force error (meV/Å)")
    ax.set_xlabel("Element")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, 1.3 * max([top, *(v for v, _, _ in shown)]))
    ax.legend(frameon=False, fontsize="small", ncols=4, loc="upper center")
    return fig


def held_out_section(
    errors: HeldOutErrors,
    data_name: str,
    warn: float = FORCE_MAE_WARN_EV_PER_A,
    fail: float = FORCE_MAE_FAIL_EV_PER_A,
    forces: str = "conservative",
) -> Section:
    """The section of :func:`~stablemd.diagnose.held_out.held_out_errors` on ``data_name``.

    Verdict: the largest force MAE of any element (eV/Å): pass ≤ ``warn`` < warn ≤ ``fail`` <
    fail; non-finite predictions fail. The worst element, not the mean over atoms, is judged
    because hydrogens outnumber the heavy atoms and hide their errors in the mean.
    """
    metrics = errors.metrics
    overall_key, per_element_key = FORCE_KEYS[forces]
    per_element = metrics[per_element_key]
    worst = max(per_element, key=lambda e: (not math.isfinite(per_element[e]["mae"]),
                                            per_element[e]["mae"]))  # fmt: skip
    worst_mae = _finite_or_none(per_element[worst]["mae"])
    finite = all(
        math.isfinite(v) for row in (
            metrics["energy_per_structure_eV"], metrics["energy_per_atom_eV"],
            metrics[overall_key], *per_element.values(),
        ) for v in row.values()
    )  # fmt: skip
    overall = _finite_or_none(metrics[overall_key]["mae"])
    note = "" if overall is None else f"all atoms: {overall:.4g} eV/Å"
    if not finite:
        note = "the model predicts non-finite energies or forces on some frames"
    verdict = Verdict(
        check=f"held-out force MAE, worst element ({worst}), {forces} forces",
        value=worst_mae,
        threshold=f"warn > {warn:g}, fail > {fail:g} eV/Å",
        status=status_above(worst_mae if finite else None, warn, fail),
        unit="eV/Å",
        note=note,
    )
    rows = [
        ["energy per structure", "meV", metrics["energy_per_structure_eV"]],
        ["energy per atom", "meV", metrics["energy_per_atom_eV"]],
        ["forces, all atoms", "meV/Å", metrics[overall_key]],
        *([f"forces on {e}", "meV/Å", v] for e, v in per_element.items()),
    ]
    table = Table(
        columns=["quantity", "unit", "MAE", "RMSE"],
        rows=[
            [name, unit, *(_finite_or_none(1000 * value[k]) for k in ("mae", "rmse"))]
            for name, unit, value in rows
        ],
        caption=f"Errors on {metrics['n_frames']} held-out frames of {data_name}",
    )
    n = metrics["n_frames"]
    if errors.located is None:  # --include-training
        which = f"all {n} frames of {data_name}, training and validation frames included"
    else:
        which = (
            f"the {n} frames of {data_name} it was neither trained nor validated on: "
            + errors.located.describe(data_name)
        )
    summary = (
        f"Energy and force errors of the model on {which}. Low errors are necessary for "
        "stable MD, not sufficient: the stability section tests the rest."
    )
    data = {
        "data": data_name,
        "n_frames": metrics["n_frames"],
        "frame_indices": errors.indices,
        "thresholds_eV_per_A": {"warn": warn, "fail": fail},
        "metrics": {
            key: (
                {e: {k: _finite_or_none(x) for k, x in v.items()} for e, v in value.items()}
                if key.endswith("per_element_eV_per_A")
                else {k: _finite_or_none(x) for k, x in value.items()}
                if isinstance(value, dict)
                else value
            )
            for key, value in metrics.items()
        },
    }
    figure = Figure(
        _force_bar_plot(per_element, warn, fail),
        caption="Force MAE and RMSE per element on held-out frames; dashed lines: the "
        "verdict's thresholds (shown when within the plot's range).",
        alt="Bar plot of force errors per element",
    )
    return Section(
        title="Held-out errors",
        summary=summary,
        verdicts=[verdict],
        figures=[figure],
        tables=[table],
        data=data,
    )
