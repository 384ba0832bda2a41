"""The early warning in the stability benchmark: the CLI index of each replica recorded (and
resumed exactly), a replica pushed out of the latent domain crossing the critical level, the
record's lead times and saturation, freezing on the warning, the command's outputs."""

from __future__ import annotations

import json
import math

import ase.io
import numpy as np
import pytest
import torch
from early_warning_support import LEVEL, starts, warned_model
from md_support import single_thread  # noqa: F401

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning import CriticalLevel, LatentDomain
from stablemd.diagnose.early_warning.model_file import EarlyWarning, attach_early_warning
from stablemd.diagnose.early_warning.report import early_warning_record, record_counts
from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability
from stablemd.models.registry import save_potential
from stablemd.systems import get_system

pytestmark = pytest.mark.usefixtures("single_thread")


def settings(time_ps=0.03, **extra):
    # bonds may stretch (the squeezed H moved 0.8 Å from its C): only the warning may stop it
    return StabilitySettings(
        replicas=4, temperature_K=10, time_ps=time_ps, check_every=5, max_bond_deviation_A=5.0,
        **extra,
    )  # fmt: skip


def test_a_replica_pushed_out_of_the_domain_crosses_and_a_resumed_run_is_the_same(tmp_path):
    model, system = warned_model(), get_system("ethanol")
    whole = run_stability(model, system, starts(), settings(), tmp_path / "whole", progress=False)
    record = whole.early_warning
    final = np.array(record["final_cli_ps"])
    (squeezed,) = np.flatnonzero(final > 0)  # only the squeezed replica was ever flagged
    assert record["crossing_ps"][squeezed] == pytest.approx(0.01)
    assert [c for k, c in enumerate(record["crossing_ps"]) if k != squeezed] == [None] * 3
    assert record["critical_level_ps"] == LEVEL.level_ps
    assert record["times_ps"] == pytest.approx(np.arange(13) * 0.0025)
    # two atoms of nine flagged from the first step: the index grows by 2/9 × 2.5 fs per call
    assert record["cli_ps"][squeezed][4] == pytest.approx(4 * 2 / 9 * 0.0025, rel=1e-6)
    assert all(np.all(np.diff(series) >= 0) for series in record["cli_ps"])

    # stopped after 15 fs and extended from its checkpoint: the same index at every call
    run_stability(model, system, starts(), settings(0.015), tmp_path / "parts", progress=False)
    parts = run_stability(model, system, starts(), settings(), tmp_path / "parts", progress=False)
    assert parts.early_warning == record

    # the same weights with another stored level (refitted), or the warning switched off, make
    # another run: not resumed from this one
    domain = model.attachments["latent_domain"]["domain"]
    attach_early_warning(model, EarlyWarning(LatentDomain.from_state_dict(domain), {}))
    with pytest.raises(InputError, match="early_warning_model"):
        run_stability(model, system, starts(), settings(), tmp_path / "whole", progress=False)
    with pytest.raises(InputError, match="early_warning"):
        run_stability(
            model, system, starts(), settings(early_warning=False), tmp_path / "whole",
            progress=False,
        )  # fmt: skip


def test_freezing_on_the_warning_stops_the_replica_at_its_crossing(tmp_path):
    model, system = warned_model(), get_system("ethanol")
    frozen = run_stability(
        model, system, starts(), settings(freeze_on_warning=True), tmp_path, progress=False
    )
    times = frozen.summary.stable_times_ps
    (k,) = [i for i, t in enumerate(times) if t is not None]
    assert times[k] == pytest.approx(0.01)
    assert frozen.failure_reasons[k] == "cli_above_critical_level"
    assert frozen.early_warning["lead_ps"] == [None] * 4  # frozen by the warning: no failure
    assert len(frozen.early_warning["cli_ps"][k]) == 5  # its series ends at the crossing


def test_the_record_gives_lead_times_and_saturation_on_known_series():
    times = torch.arange(11, dtype=torch.float64) * 0.1  # ps
    cli = torch.stack(
        [
            times * 0.5,  # passes L = 0.1 at 0.3 ps, fails at 0.7 ps
            torch.where(times < 0.5, times * 0.9, 0.45),  # crosses, then levels off; survives
            torch.zeros(11),  # never flagged, survives
            times * 0.5,  # crosses, frozen by the warning at 0.6 ps
        ],
        dim=1,
    )
    cli[8:, 0] = math.nan  # frozen at its failure
    cli[7:, 3] = math.nan
    failures = [0.7, None, None, 0.6]
    reasons = ["bond_length_deviation", None, None, "cli_above_critical_level"]
    level = CriticalLevel(0.1, 1.0)
    record = early_warning_record(
        {"times_ps": times, "cli_ps": cli}, level, failures, reasons, 1.0, "grade", 2.0
    )
    assert record["crossing_ps"] == pytest.approx([0.3, 0.2, None, 0.3])
    assert record["lead_ps"][0] == pytest.approx(0.4)
    assert record["lead_ps"][1:] == [None, None, None]
    assert record["saturated"] == [False, True, True, False]
    assert [len(c) for c in record["cli_ps"]] == [8, 11, 11, 7]
    counts = record_counts(record, failures)
    assert counts["warned_before_failure"] == 1 and counts["median_lead_ps"] == pytest.approx(0.4)
    assert counts["survivors_crossed"] == 1 and counts["saturated_survived"] == 2


def test_stability_command_writes_the_index_and_its_plot(tmp_path, capsys):
    save_potential(warned_model(), tmp_path / "warned.pt")
    ase.io.write(tmp_path / "starts.xyz", starts())
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_info:
        main(["stability", "--model", str(tmp_path / "warned.pt"), "--system", "ethanol",
              "--replicas", "4", "--temperature", "10", "--time-ps", "0.03", "--check-every",
              "5", "--max-bond-deviation", "5", "--starts", str(tmp_path / "starts.xyz"),
              "--out", str(out), "--no-progress"])  # fmt: skip
    assert exit_info.value.code in (0, None)
    row = json.loads((out / "summary.json").read_text())["warned"]
    assert sum(c is not None for c in row["early_warning"]["crossing_ps"]) == 1
    assert row["early_warning_counts"]["survivors_crossed"] == 1
    assert (out / "early_warning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(capsys.readouterr().out.split())
    assert "1 of 4 stable replicas passed it" in text
