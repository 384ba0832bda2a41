"""Stability statistics on known inputs, survival curves, plots, table and JSON summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console

from stablemd.cli.output import stability_table
from stablemd.core.errors import InputError
from stablemd.diagnose.stability.report import (
    plot_h_r_comparison,
    plot_survival,
    summarize,
    survival_curve,
    write_summary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.stat().st_size > 0 and path.read_bytes()[:8] == PNG_MAGIC


def test_summary_counts_never_failing_replicas_at_the_run_length():
    summary = summarize([10.0, 20.0, None, 40.0, math.inf, math.nan], run_length_ps=50.0)
    # censored times: 10, 20, 50, 40, 50, 50
    assert summary.n_replicas == 6
    assert summary.mean_ps == pytest.approx(220.0 / 6)
    assert summary.median_ps == pytest.approx(45.0)
    assert summary.fraction_stable == pytest.approx(0.5)
    assert summary.stable_times_ps == (10.0, 20.0, None, 40.0, None, None)

    all_stable = summarize([None, None], run_length_ps=12.0)
    assert all_stable.median_ps == 12.0 and all_stable.fraction_stable == 1.0
    # a median that half the replicas outlived is only a lower bound, and says so
    assert summary.median_text == "≥ 45" and all_stable.median_text == "≥ 12"
    assert summarize([1.0, 2.0, None], run_length_ps=5.0).median_text == "2"


@pytest.mark.parametrize(
    "times, match",
    [
        ([1.0, 60.0], r"stable_times_ps\[1\]"),
        ([-1.0], r"\[0\]"),
        ([-math.inf], r"\[0\]"),
        ([], "no"),
    ],
)
def test_summary_rejects_bad_times(times, match):
    with pytest.raises(InputError, match=match):
        summarize(times, run_length_ps=50.0)


def test_survival_curve_is_a_monotone_step_to_the_unstable_fraction():
    summary = summarize([10.0, 20.0, 20.0, None, 0.0], run_length_ps=50.0)
    t, fraction = survival_curve(summary)
    assert t[0] == 0.0 and t[-1] == 50.0
    assert np.all(np.diff(t) > 0) and np.all(np.diff(fraction) >= 0)
    # fraction unstable by time t (post-step): 1/5 fail at 0, then 10, then two at 20
    np.testing.assert_allclose(fraction, [0.2, 0.4, 0.8, 0.8])
    assert fraction[-1] == pytest.approx(1 - summary.fraction_stable)


def test_plots_are_png_files(tmp_path):
    per_model = {
        "energy+forces": summarize([3.0, 8.0, 12.0, None], run_length_ps=20.0),
        "StABlE": summarize([15.0, None, None, None], run_length_ps=20.0),
    }
    survival = plot_survival(per_model, tmp_path / "plots" / "survival.png", title="aspirin")
    assert is_png(survival)

    r = np.linspace(0.01, 6.0, 300)
    reference = np.exp(-((r - 1.5) ** 2))
    curves = {"energy+forces": reference * 1.1, "StABlE": reference + 0.01}
    comparison = plot_h_r_comparison(r, reference, curves, tmp_path / "h_r.png")
    assert is_png(comparison)
    with pytest.raises(InputError, match="bad"):
        plot_h_r_comparison(r, reference, {"bad": reference[:10]}, tmp_path / "x.png")


def test_table_and_json_summary(tmp_path):
    per_model = {"baseline": summarize([5.0, None], run_length_ps=10.0)}
    console = Console(record=True, width=120)
    console.print(stability_table(per_model))
    text = console.export_text()
    assert "baseline" in text and "7.5" in text and "50 %" in text

    path = write_summary(tmp_path / "summary.json", {**per_model, "extra": {"D_cm2_s": 2.3e-5}})
    data = json.loads(path.read_text())
    assert data["baseline"]["median_ps"] == pytest.approx(7.5)
    assert data["baseline"]["stable_times_ps"] == [5.0, None]
    assert data["extra"] == {"D_cm2_s": 2.3e-5}
