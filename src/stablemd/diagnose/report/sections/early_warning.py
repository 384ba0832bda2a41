"""The report's early warning: the CLI index of each replica of the report's stability run
(docs/early_warning.md), for a model that carries a latent domain: which replicas passed the
critical level, how long before their failure, and whose index still grows at the end."""

from __future__ import annotations

from stablemd.diagnose.early_warning.report import cli_figure, record_counts
from stablemd.diagnose.report.model import Figure, Section, Table, Verdict
from stablemd.diagnose.stability.benchmark import ModelStability


def early_warning_section(result: ModelStability, model_name: str) -> Section | None:
    """The section of a stability run's early-warning record (None: the run had none).

    Verdicts, both warn-only (the stability section judges the failures themselves): stable
    replicas whose index passed the critical level (they spent longer outside the training
    domain than the reference MD did, so a longer run may fail them), and stable replicas whose
    index had not saturated by the end (still leaving the domain).
    """
    record = result.early_warning
    if record is None:
        return None
    failures = result.summary.stable_times_ps
    counts = record_counts(record, failures)
    n = len(failures)
    survivors = counts["survivors"]
    verdicts = []
    if record["critical_level_ps"] is not None:
        crossed = counts["survivors_crossed"]
        lead = counts["median_lead_ps"]
        verdicts.append(
            Verdict(
                check="stable replicas past the critical level",
                value=float(crossed),
                threshold="warn: any",
                status="warn" if crossed else "pass",
                note=f"of {survivors} stable; {counts['warned_before_failure']} of "
                f"{counts['failed']} failed replicas passed it before failing"
                + ("" if lead is None else f", median lead {lead:.3g} ps"),
            )
        )
    growing = survivors - counts["saturated_survived"]
    verdicts.append(
        Verdict(
            check="stable replicas whose index still grows at the end",
            value=float(growing),
            threshold="warn: any",
            status="warn" if growing else "pass",
            note=f"of {survivors} stable (trailing rate over the last "
            f"{record['saturation_window_ps']:.3g} ps above a tenth of the average rate)",
        )
    )
    level = record["critical_level_ps"]
    level_text = (
        "no critical level (the model's data held no reference MD trajectories)"
        if level is None
        else f"critical level {level:.3g} ps at {record['calibration_ps']:.3g} ps, calibrated "
        "on the reference MD of the training data"
    )
    summary = (
        f"CLI(t): the time integral of the fraction of each replica's atoms outside the model's "
        f"latent domain ({record['indicator']} indicator"
        + (f", γ > {record['grade_threshold']:g}" if record["indicator"] == "grade" else "")
        + f"), from the same forward passes as the {n} replicas of the stability run; "
        f"{level_text}. A CLI-inspired index (Isamura and Popelier publish no formula): it is "
        "stablemd's own definition, and whether it warns early is measured, not assumed."
    )
    rows = [
        [k, failures[k], (result.failure_reasons or [None] * n)[k], record["crossing_ps"][k],
         record["lead_ps"][k], record["final_cli_ps"][k], "yes" if record["saturated"][k] else "no"]
        for k in range(n)
    ]  # fmt: skip
    table = Table(
        columns=[
            "replica",
            "failure (ps)",
            "reason",
            "crossing (ps)",
            "lead (ps)",
            "CLI at end (ps)",
            "saturated",
        ],  # fmt: skip
        rows=rows,
        caption="Per replica: its failure, when its index passed the critical level and by how "
        "much that came before the failure (–: never, or no failure)",
    )
    figure = Figure(
        cli_figure({model_name: (record, failures)}),
        caption="CLI against time per replica: failed replicas red (× at the failure), stable "
        "ones blue; dashed: the critical level L·max(1, t/T_cal), circles at the crossings.",
        alt="Cumulative latent instability index of each replica against time",
    )
    return Section(
        title="Early warning (latent instability)",
        summary=summary,
        verdicts=verdicts,
        figures=[figure],
        tables=[table],
        data={"early_warning": record, "counts": counts},
    )
