"""The report's conservation sections: which force schemes a model is checked with, and
verdicts that follow the physics (a gradient passes, an untrained direct head does not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from md_support import single_thread  # noqa: F401

from stablemd.diagnose.energy_drift import ElementTemperatures
from stablemd.diagnose.report.sections.conservation import (
    ConservationSettings,
    SchemeRun,
    _element_verdict,
    _significant_status,
    force_field_section,
    force_kinds,
    md_conservation_section,
    md_schemes,
)
from stablemd.models.painn import PaiNN
from stablemd.systems import get_system

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK = ConservationSettings(replicas=2, time_ps=0.03, discard_ps=0.01, max_steps=50, mts=2)


def tiny_model(forces: str) -> PaiNN:
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1).double()
    model.energy_scaling.scale.fill_(0.1)
    model.metadata = {"training": {"config": {"forces": forces}}}
    return model


@pytest.mark.parametrize(
    ("forces", "kinds", "schemes"),
    [
        ("conservative", ["conservative"], ["conservative"]),
        ("direct", ["direct"], ["direct"]),
        ("both", ["conservative", "direct"], ["conservative", "direct", "MTS (M = 2)"]),
    ],
)
def test_a_model_is_checked_with_the_forces_it_was_trained_to_give(forces, kinds, schemes):
    model = tiny_model(forces)
    assert force_kinds(model) == kinds
    assert list(md_schemes(model, 2)) == schemes


def test_the_gradient_passes_and_the_untrained_direct_head_fails():
    ethanol = get_system("ethanol").atoms
    section = force_field_section(tiny_model("both"), [ethanol], ethanol, QUICK)
    status = {v.check: v.status for v in section.verdicts}
    assert status["Jacobian asymmetry λ, conservative forces"] == "pass"
    assert status["work around a closed loop, conservative forces"] == "pass"
    assert status["Jacobian asymmetry λ, direct forces"] == "fail"  # λ ≈ 0.5, not a gradient
    assert section.data["conservative"]["lambda"] < 1e-10
    assert section.data["direct"]["lambda"] > 0.03


def test_md_checks_run_every_scheme_and_record_their_numbers():
    ethanol = get_system("ethanol").atoms
    section = md_conservation_section(tiny_model("both"), [ethanol], QUICK)
    assert set(section.data) == {"conservative", "direct", "MTS (M = 2)"}
    for name, numbers in section.data.items():
        assert numbers["nve_failure"] is None and numbers["csvr_failure"] is None, name
        assert len(numbers["drift"]["score"]) == QUICK.replicas
        assert set(numbers["element_temperatures_K"]) == {"H", "C", "O"}
    checks = [v.check for v in section.verdicts]
    assert "NVE drift score, MTS (M = 2)" in checks


def test_a_model_with_both_heads_judges_its_element_temperatures_against_its_gradient():
    ethanol = get_system("ethanol").atoms
    section = md_conservation_section(tiny_model("both"), [ethanol], QUICK)
    verdicts = {v.check: v for v in section.verdicts}
    # −∂E/∂r itself has no reference: against the thermostat, a warning at most
    assert "never fails" in verdicts["element temperatures under CSVR, conservative"].threshold
    per_replica = {n: d["element_temperatures_per_replica_K"] for n, d in section.data.items()}
    for name in ("direct", "MTS (M = 2)"):
        verdict = verdicts[f"element temperatures under CSVR against −∂E/∂r, {name}"]
        assert "fail > 15 %" in verdict.threshold
        element = verdict.note.split(":")[0].split()[-1]
        # the value is the named element's replica-by-replica difference from −∂E/∂r, % of T
        difference = np.subtract(per_replica[name][element], per_replica["conservative"][element])
        assert verdict.value == pytest.approx(100 * difference.mean() / QUICK.temperature_K)
    assert not any(f"CSVR, {name}" in check for check in verdicts for name in ("direct", "MTS"))


def test_a_conservative_model_keeps_the_absolute_element_temperature_check():
    ethanol = get_system("ethanol").atoms
    section = md_conservation_section(tiny_model("conservative"), [ethanol], QUICK)
    element_checks = [v for v in section.verdicts if "element temperatures" in v.check]
    assert [v.check for v in element_checks] == ["element temperatures under CSVR, conservative"]
    assert element_checks[0].status != "fail" and "never fails" in element_checks[0].threshold


def csvr_run(name: str, per_replica_K) -> SchemeRun:
    """A scheme whose CSVR run read ``per_replica_K`` [replicas, (H, C, O)] (K)."""
    per_replica_K = np.asarray(per_replica_K, dtype=float)
    zeros = np.zeros_like(per_replica_K)
    temperatures = ElementTemperatures(
        elements=np.array([1, 6, 8]), time_fs=np.zeros(1), temperature_K=zeros[None],
        total_temperature_K=zeros[None, :, 0], mean_per_replica_K=per_replica_K,
        mean_K=per_replica_K.mean(0), drift_K_per_ps=zeros, mean_drift_K_per_ps=zeros[0],
    )  # fmt: skip
    return SchemeRun(name, temperatures=temperatures)


#: The conservative reference: 8 replicas scattered about 320 K (H), 300 K (C), 270 K (O).
REFERENCE_K = np.array([320.0, 300.0, 270.0]) + 40.0 * np.sin(np.arange(24)).reshape(8, 3)
#: ±1 replica by replica: a difference of mean a and scatter ±δ has standard error δ / √7.
ALTERNATE = np.array([1.0, -1.0] * 4)[:, None]


@pytest.mark.parametrize(
    ("mean_K", "scatter_K", "status", "element"),
    [
        ([0.0, 0.0, 0.0], [30.0, 30.0, 30.0], "pass", None),  # equal within the errors
        ([0.0, 0.0, 60.0], [5.0, 5.0, 10.0], "fail", "O"),  # O 20 % of T hotter, 16 s.e.
        ([0.0, 0.0, 30.0], [5.0, 5.0, 10.0], "warn", "O"),  # 10 %, 8 s.e.
        ([0.0, 0.0, 60.0], [5.0, 5.0, 100.0], "pass", None),  # 20 % but within 1.6 s.e.
        # H's larger difference is noise; C's smaller one is not, and names the verdict
        ([-90.0, 30.0, 0.0], [300.0, 10.0, 5.0], "warn", "C"),
    ],
)  # fmt: skip
def test_element_temperatures_are_judged_against_the_gradient_beyond_the_noise(
    mean_K, scatter_K, status, element
):
    shift = np.asarray(mean_K) + ALTERNATE * np.asarray(scatter_K)
    verdict = _element_verdict(
        csvr_run("direct", REFERENCE_K + shift), 300.0, csvr_run("conservative", REFERENCE_K)
    )
    assert verdict.check == "element temperatures under CSVR against −∂E/∂r, direct"
    assert verdict.status == status
    if element is not None:
        k = "HCO".index(element)
        assert verdict.note.startswith(f"worst element {element}:")
        assert verdict.value == pytest.approx(100 * mean_K[k] / 300.0)
        assert f"± {scatter_K[k] / np.sqrt(7):.1f} K" in verdict.note


def test_a_failed_gradient_run_leaves_the_absolute_element_check():
    hot_oxygen = np.full((8, 3), 300.0) + [0.0, 0.0, 60.0] + ALTERNATE * [5.0, 5.0, 10.0]
    failed = SchemeRun("conservative", csvr_failure="replica 0 turned non-finite at 5 fs")
    verdict = _element_verdict(csvr_run("direct", hot_oxygen), 300.0, failed)
    assert verdict.check == "element temperatures under CSVR, direct"
    assert verdict.status == "warn"  # O 20 % off the thermostat: a warning at most
    assert "turned non-finite" in verdict.threshold


@pytest.mark.parametrize(
    ("value", "error", "expected"),
    [(0.5, 0.0, "pass"), (2.0, 0.1, "warn"), (2.0, 1.0, "pass"), (-6.0, 0.5, "fail"),
     (6.0, 2.5, "pass")],
)  # fmt: skip
def test_a_drift_is_judged_only_beyond_its_noise(value, error, expected):
    assert _significant_status(value, error, 1.0, 5.0) == expected


class Exploding(PaiNN):
    """A model whose energies (and so forces) turn NaN from its 36th call on: the NVE check
    (60 steps, a frame every 10) blows up after 4 frames, the CSVR check right away."""

    calls = 0

    def raw_outputs(self, batch, *args, **kwargs):
        out = super().raw_outputs(batch, *args, **kwargs)
        self.calls += 1
        if self.calls > 35:
            out["raw_energies"] = out["raw_energies"] * float("nan")
        return out


def test_a_blown_up_md_check_fails_and_keeps_the_others():
    torch.manual_seed(0)
    model = Exploding([1, 6, 8], n_features=8, n_interactions=1).double()
    model.energy_scaling.scale.fill_(0.1)
    model.metadata = {"training": {"config": {"forces": "conservative"}}}
    ethanol = get_system("ethanol").atoms
    section = md_conservation_section(model, [ethanol], QUICK)
    status = {v.check: (v.status, v.value, v.note) for v in section.verdicts}
    # the fits used the finite frames before the blow-up; no pass for that
    assert status["NVE energy conservation, conservative"][:2] == ("fail", None)
    assert "turned non-finite after" in status["NVE energy conservation, conservative"][2]
    assert status["element temperatures under CSVR, conservative"][:2] == ("fail", None)
    assert "non-finite" in section.data["conservative"]["csvr_failure"]


def test_mts_check_fills_a_two_femtosecond_outer_step_unless_told_m():
    assert ConservationSettings(timestep_fs=0.5).inner_steps == 4
    assert ConservationSettings(timestep_fs=0.25).inner_steps == 8
    assert ConservationSettings(timestep_fs=5.0).inner_steps == 1
    assert ConservationSettings(timestep_fs=0.5, mts=8).inner_steps == 8
