"""Ensemble-free uncertainty: gradient features, the GP posterior, calibration, the model file."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from test_cli import ethanol_db, run  # noqa: F401 (fixture)
from test_models import ethanol, make_model, rattled

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.explore.uncertainty.calibration import calibration_factor
from stablemd.explore.uncertainty.ensemble import ensemble_predict
from stablemd.explore.uncertainty.estimator import Uncertainty, model_uncertainty
from stablemd.explore.uncertainty.features import GradientFeatures
from stablemd.explore.uncertainty.posterior import FeatureGram, Posterior
from stablemd.models.potential import predict
from stablemd.models.registry import load_potential

KINDS = ["painn", "mace"]


def features_of(model, features, atoms_list, create_graph=False):
    batch = Batch.from_atoms(atoms_list, dtype=torch.float64)
    with features.tape() as tape:
        out = predict(model, batch, ("energy", "forces"), create_graph=create_graph, tape=tape)
    return features(tape), out


def fitted(model, kind="sketched", projections=64, n_train=6):
    """An uncertainty of ``model`` fitted on rattled ethanols (calibration factors 1)."""
    features = GradientFeatures(model.gradient_feature_layers(), kind, projections, seed=0)
    atoms, structures = FeatureGram(features.dimension), FeatureGram(features.dimension)
    for k in range(n_train):
        phi, _ = features_of(model, features, [rattled(ethanol(), 10 + k)])
        atoms.add(phi)
        structures.add(phi.mean(0, keepdim=True))
    return Uncertainty(
        features, Posterior.fit(atoms), Posterior.fit(structures), 1.0, 1.0, "conformal", 0.05
    )


@pytest.mark.parametrize("kind", KINDS)
def test_last_layer_features_are_the_atomic_energy_gradients(kind):
    model = make_model(kind)
    layers = model.gradient_feature_layers()
    features = GradientFeatures(layers, "last-layer")
    phi, out = features_of(model, features, [ethanol()], create_graph=True)
    weight = next(layers[-1].parameters())
    for i in range(len(phi)):
        expected = torch.autograd.grad(out["energies"][i], weight, retain_graph=True)[0]
        torch.testing.assert_close(phi[i], expected.reshape(-1), rtol=1e-10, atol=1e-12)


def test_hidden_layer_features_are_the_atomic_energy_gradients():
    """A layer with several outputs ([out, in] weights): g_i ⊗ x_i = ∂E_i/∂W per atom."""
    model = make_model("painn")
    layer = model.energy_head[0]
    features = GradientFeatures([layer], "last-layer")
    phi, out = features_of(model, features, [ethanol()], create_graph=True)
    for i in range(len(phi)):
        expected = torch.autograd.grad(out["energies"][i], layer.weight, retain_graph=True)[0]
        torch.testing.assert_close(phi[i], expected.T.reshape(-1), rtol=1e-10, atol=1e-12)


def test_sketched_features_sum_to_the_projected_energy_gradient():
    """Σ_i φ_i over a structure = Σ_layers diag(R₂ᵀ (∂E/∂W) R₁)/√P: the sketch of the exact
    gradient of the energy with respect to every layer's weights (message passing included)."""
    model = make_model("painn")
    layers = model.gradient_feature_layers()
    features = GradientFeatures(layers, "sketched", projections=32, seed=3)
    phi, out = features_of(model, features, [ethanol()], create_graph=True)
    gradients = torch.autograd.grad(out["energy"].sum(), [layer.weight for layer in layers])
    expected = sum(
        torch.einsum("up,vu,vp->p", r_in, g, r_out)
        for (r_in, r_out), g in zip(features.matrices, gradients, strict=True)
    ) / np.sqrt(32)
    torch.testing.assert_close(phi.sum(0), expected, rtol=1e-9, atol=1e-12)


def test_posterior_equals_the_kernel_form_solve():
    """σ² = σ_n² φᵀ(ΦᵀΦ + σ_n² I)⁻¹φ (scaled kernel) equals k(x,x) − k_xᵀ(K + σ_n² I)⁻¹k_x."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    test = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    sums = FeatureGram(5)
    sums.add(train[:3])
    sums.add(train[3:])
    noise = 0.3  # large, so the difference to the noise-free projection is visible
    posterior = Posterior.fit(sums, noise)
    scale = train.pow(2).sum(1).mean()
    kernel = (train @ train.T) / scale
    cross = (train @ test.T) / scale
    solve = torch.linalg.solve(kernel + noise**2 * torch.eye(7, dtype=torch.float64), cross)
    expected = test.pow(2).sum(1) / scale - (cross * solve).sum(0)
    torch.testing.assert_close(posterior.std(test) ** 2, expected, rtol=1e-10, atol=1e-14)


def test_std_vanishes_on_training_points_and_grows_away():
    model = make_model("painn")
    uncertainty = fitted(model)
    batch = [rattled(ethanol(), 10 + k) for k in range(3)]  # three training structures
    out = uncertainty.predict(model, Batch.from_atoms(batch, dtype=torch.float64))
    assert float(out["uncertainty"].max()) < 0.01  # ≤ σ_n at a training point
    far = [rattled(ethanol(), 1000 + k, scale=0.05 * 2**k) for k in range(4)]
    out = uncertainty.predict(model, Batch.from_atoms(far, dtype=torch.float64))
    u = out["uncertainty"]
    assert float(u[0]) > 0.05
    assert bool((u[1:] > u[:-1]).all()), u  # further from the training set, larger


@pytest.mark.parametrize("kind", KINDS)
def test_uncertainty_is_invariant_under_rotation_and_permutation(kind):
    model = make_model(kind)
    uncertainty = fitted(model, n_train=1)
    atoms = rattled(ethanol(), 5, scale=0.15)
    base = uncertainty.predict(model, Batch.from_atoms([atoms], dtype=torch.float64))
    moved = atoms.copy()
    moved.positions = Rotation.random(random_state=1).apply(atoms.positions) + 3.0
    order = np.random.default_rng(2).permutation(len(atoms))
    moved = moved[order]
    out = uncertainty.predict(model, Batch.from_atoms([moved], dtype=torch.float64))
    torch.testing.assert_close(out["uncertainty"], base["uncertainty"], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(
        out["atomic_uncertainty"], base["atomic_uncertainty"][order], rtol=1e-8, atol=1e-12
    )


def test_conformal_calibration_reaches_its_nominal_coverage():
    """On exchangeable data (errors = true scale × noise, σ off by a constant) the conformal
    interval covers at least 1 − α of new points, on average over draws, and not much more."""
    rng = np.random.default_rng(0)
    coverages = []
    for _ in range(3000):
        scale = rng.uniform(0.1, 2.0, 60)
        errors = np.abs(scale * rng.standard_normal(60))
        std = torch.as_tensor(scale / 7.0)  # raw σ: right shape, wrong size
        c = calibration_factor(torch.as_tensor(errors[:40]), std[:40], "conformal", 0.05)
        coverages.append(np.mean(errors[40:] <= c * std[40:].numpy()))
    # exactly ⌈(n+1)(1−α)⌉/(n+1) = 39/41 in expectation; the standard error here is 0.001
    assert abs(np.mean(coverages) - 39 / 41) < 0.004, np.mean(coverages)
    # below 1/α − 1 = 19 values the conformal quantile is beyond the largest ratio: refused
    c = calibration_factor(torch.as_tensor(errors[:19]), std[:19], "conformal", 0.05)
    assert c == float((torch.as_tensor(errors[:19]) / std[:19]).max())
    with pytest.raises(InputError, match="needs at least 19 validation frames, got 18"):
        calibration_factor(torch.as_tensor(errors[:18]), std[:18], "conformal", 0.05,
                           "validation frames")  # fmt: skip
    # the Gaussian fit of a Gaussian error recovers its scale (here 7)
    errors = torch.as_tensor(scale * rng.standard_normal(60)).repeat(100)
    gaussian = calibration_factor(errors, std.repeat(100), "gaussian")
    assert abs(gaussian - 7.0) < 1.5


def test_uncertainty_travels_with_the_model_file(tmp_path):
    from stablemd.explore.uncertainty.estimator import attach_uncertainty
    from stablemd.models.registry import save_potential

    model = make_model("painn")
    uncertainty = fitted(model, n_train=2)
    attach_uncertainty(model, uncertainty)
    save_potential(model, tmp_path / "m.pt")
    loaded = load_potential(tmp_path / "m.pt")
    batch = Batch.from_atoms([rattled(ethanol(), 99, scale=0.2)], dtype=torch.float64)
    a = uncertainty.predict(model, batch)["atomic_uncertainty"]
    b = model_uncertainty(loaded).predict(loaded, batch)["atomic_uncertainty"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():  # trained further: the uncertainty no longer belongs to it
        next(loaded.parameters()).add_(0.01)
    with pytest.raises(InputError, match="fitted for other weights"):
        model_uncertainty(loaded)


def test_ensemble_spread():
    members = [make_model("painn") for _ in range(3)]
    batch = Batch.from_atoms([ethanol(), rattled(ethanol(), 4)], dtype=torch.float64)
    same = ensemble_predict(members, batch)
    assert float(same["uncertainty"].abs().max()) == 0.0
    assert float(same["atomic_uncertainty"].abs().max()) == 0.0
    with torch.no_grad():
        for k, member in enumerate(members):
            for p in member.parameters():
                p.add_(0.01 * k * torch.randn_like(p))
    spread = ensemble_predict(members, batch)
    energies = torch.stack([predict(m, batch)["energy"].detach() for m in members])
    torch.testing.assert_close(spread["energy"], energies.mean(0))
    torch.testing.assert_close(spread["uncertainty"], (energies / 9).std(0))
    assert bool((spread["atomic_uncertainty"] > 0).all())


def test_fit_then_evaluate_reports_calibration(ethanol_db, tmp_path, capsys):  # noqa: F811
    config = tmp_path / "small.yaml"
    config.write_text("model_options: {n_features: 8, n_interactions: 1}\nbatch_size: 8\n")
    model, out = tmp_path / "m.pt", tmp_path / "m-u.pt"
    train = ["train", "--data", str(ethanol_db), "--n-train", "30", "--n-val", "20"]
    run([*train, "--out", str(model), "--config", str(config), "--max-epochs", "1",
         "--no-progress"], capsys)  # fmt: skip
    fit = ["uncertainty", "fit", "--model", str(model), "--data", str(ethanol_db)]
    code, stdout, _ = run([*fit, "--out", str(out), "--projections", "64"], capsys)
    assert code in (0, None), stdout
    assert "20 validation frames" in stdout
    assert model_uncertainty(load_potential(model)) is None  # the input is left alone
    assert model_uncertainty(load_potential(out)).features.projections == 64
    code, _, err = run([*fit, "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = run([*fit, "--out", str(model), "--overwrite"], capsys)
    assert code == 2 and "is also an input" in err
    metrics_path, plot = tmp_path / "e.json", tmp_path / "cal.png"
    evaluate = ["evaluate", "--model", str(out), "--data", str(ethanol_db)]
    code, stdout, _ = run([*evaluate, "--json", str(metrics_path), "--plot", str(plot)], capsys)
    calibration = json.loads(metrics_path.read_text())["uncertainty"]
    assert calibration["forces_per_atom"]["n"] == 10 * 9  # the held-out frames' atoms
    assert 0 <= calibration["forces_per_atom"]["coverage"] <= 1
    assert plot.stat().st_size > 0 and "Spearman" in stdout
    code, _, err = run(["evaluate", "--model", str(model), "--data", str(ethanol_db),
                        "--plot", str(tmp_path / "x.png")], capsys)  # fmt: skip
    assert code == 2 and "carries no uncertainty" in err


def test_fit_refuses_data_without_the_validation_frames(ethanol_db, tmp_path, capsys):  # noqa: F811
    from stablemd.data.database import read_frames, write_frames

    config = tmp_path / "small.yaml"
    config.write_text("model_options: {n_features: 8, n_interactions: 1}\n")
    model = tmp_path / "m.pt"
    train = ["train", "--data", str(ethanol_db), "--n-train", "20", "--n-val", "10"]
    run([*train, "--out", str(model), "--config", str(config), "--max-epochs", "1"], capsys)
    potential = load_potential(model)
    frames = read_frames(ethanol_db)
    kept = copy.deepcopy(potential.metadata["training"]["train_indices"])
    write_frames(tmp_path / "train-only.db", [frames[i] for i in kept])
    fit = ["uncertainty", "fit", "--model", str(model), "--data", str(tmp_path / "train-only.db")]
    code, _, err = run([*fit, "--out", str(tmp_path / "u.pt")], capsys)
    assert code == 2 and "none of the validation frames" in err


def test_ase_calculator_reports_the_uncertainty():
    from stablemd.ase import Calculator
    from stablemd.explore.uncertainty.estimator import attach_uncertainty

    model = make_model("painn")
    uncertainty = fitted(model, n_train=2)
    atoms = rattled(ethanol(), 7, scale=0.1)
    expected = uncertainty.predict(model, Batch.from_atoms([atoms], dtype=torch.float64))
    attach_uncertainty(model, uncertainty)
    atoms.calc = Calculator(model)
    atoms.get_forces()  # what MD asks for: u, which costs more than the forces, is not computed
    assert "uncertainty" not in atoms.calc.results
    assert atoms.calc.get_property("uncertainty", atoms) == float(expected["uncertainty"][0])
    np.testing.assert_array_equal(
        atoms.calc.get_property("atomic_uncertainties", atoms),
        expected["atomic_uncertainty"].numpy(),
    )
    np.testing.assert_array_equal(atoms.get_forces(), expected["forces"].detach().numpy())


def test_ase_calculator_refuses_a_non_finite_total_uncertainty(monkeypatch):
    from stablemd.ase import Calculator, NonFiniteError
    from stablemd.explore.uncertainty.estimator import attach_uncertainty

    model = make_model("painn")
    uncertainty = fitted(model, n_train=2)
    attach_uncertainty(model, uncertainty)
    atoms = rattled(ethanol(), 7, scale=0.1)
    atoms.calc = Calculator(model)
    predict = type(atoms.calc.uncertainty).predict

    def broken_total(self, *args, **kwargs):
        out = predict(self, *args, **kwargs)
        out["uncertainty"] = torch.full_like(out["uncertainty"], float("nan"))
        return out

    monkeypatch.setattr(type(atoms.calc.uncertainty), "predict", broken_total)
    with pytest.raises(NonFiniteError, match="uncertainty is not finite"):
        atoms.calc.get_property("uncertainty", atoms)
