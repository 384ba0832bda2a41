"""The report's conservation sections: which force schemes a model is checked with, and
verdicts that follow the physics (a gradient passes, an untrained direct head does not)."""

from __future__ import annotations

import pytest
import torch
from md_support import single_thread  # noqa: F401

from stablemd.diagnose.report.sections.conservation import (
    ConservationSettings,
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
    assert "element temperatures under CSVR, direct" in checks


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
