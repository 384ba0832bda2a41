"""Training the forces a model gives: −∂E/∂r (conservative), its direct-force head (direct) or
both, and conservative fine-tuning of a direct model (``stablemd train --init``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from stablemd.ase import Calculator
from stablemd.cli.main import main
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.data.database import write_frames
from stablemd.data.frames import FrameSet
from stablemd.models.potential import predict
from stablemd.models.registry import build_potential, load_potential, model_fingerprint
from stablemd.models.registry import trained_forces as recorded_forces
from stablemd.training.config import TrainConfig
from stablemd.training.metrics import error_metrics
from stablemd.training.statistics import fit_energy_scaling
from stablemd.training.trainer import DIRECT_COLUMN, Trainer, new_potential

SMALL_MODEL = {"n_features": 16, "n_interactions": 2, "cutoff": 4.0}
TINY_YAML = "model_options: {n_features: 8, n_interactions: 1, cutoff: 4.0}\nbatch_size: 8\n"


def _config(**overrides) -> TrainConfig:
    values = dict(model_options=SMALL_MODEL, batch_size=8, max_epochs=4, learning_rate=3e-3)
    values.update(overrides)
    return TrainConfig(**values)


def _start(config: TrainConfig, train: FrameSet):
    """The model a Trainer starts from (same seed, same fitted scaling)."""
    torch.manual_seed(config.seed)
    potential = new_potential(config, train.elements())
    fit_energy_scaling(potential, train)
    return potential


def _run(argv: list) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


def test_weights_of_each_kind_of_forces():
    assert (_config().conservative_weight, _config().direct_weight) == (100.0, 0.0)
    direct = _config(forces="direct")
    assert (direct.conservative_weight, direct.direct_weight) == (0.0, 100.0)
    both = _config(forces="both", direct_forces_weight=3.0)
    assert (both.conservative_weight, both.direct_weight) == (100.0, 3.0)
    fine_tuning = _config(direct_forces_weight=1.0)
    assert (fine_tuning.md_forces, fine_tuning.scored_forces) == ("conservative", "both")
    with pytest.raises(ValidationError, match="--forces direct trains the direct-force head"):
        _config(forces="direct", direct_forces_weight=0.0)


def test_a_direct_step_never_differentiates_with_respect_to_positions(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:16]), FrameSet(ethanol_frames[16:24])
    seen = {}
    for forces in ("direct", "conservative"):
        trainer = Trainer(
            _config(forces=forces, max_epochs=1), train, val, tmp_path / forces, progress=False
        )
        flags: list[bool] = []

        def spy(module, args, kwargs, flags=flags):
            flags.append(args[0].positions.requires_grad)

        # on the trained model only: validation runs on its EMA copy
        trainer.potential.register_forward_pre_hook(spy, with_kwargs=True)
        trainer.run()
        seen[forces] = flags
    assert len(seen["direct"]) == 2 and not any(seen["direct"])
    assert len(seen["conservative"]) == 2 and all(seen["conservative"])


def test_the_direct_loss_trains_the_direct_head_not_the_energy_head(ethanol_frames, tmp_path):
    """Without an energy term, a direct run leaves the energy head as it was: its force error
    reaches the parameters through the direct head alone, never through −∂E/∂r."""
    train, val = FrameSet(ethanol_frames[:16]), FrameSet(ethanol_frames[16:24])
    changed = {}
    for forces in ("direct", "conservative"):
        config = _config(forces=forces, energy_weight=0.0, max_epochs=1)
        trainer = Trainer(config, train, val, tmp_path / forces, progress=False)
        before = {k: v.clone() for k, v in trainer.potential.state_dict().items()}
        trainer.run()
        after = trainer.potential.state_dict()
        changed[forces] = {
            head: any(
                not torch.equal(before[k], after[k]) for k in before if k.startswith(head + ".")
            )
            for head in ("energy_head", "force_head", "messages")
        }
    assert changed["direct"] == {"energy_head": False, "force_head": True, "messages": True}
    assert changed["conservative"] == {"energy_head": True, "force_head": False, "messages": True}


def test_direct_training_reduces_the_direct_head_error(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:48]), FrameSet(ethanol_frames[48:])
    config = _config(forces="direct", max_epochs=20)
    before = error_metrics(_start(config, train), val, forces="direct")
    result = Trainer(config, train, val, tmp_path, progress=False).run()
    after = error_metrics(result.potential, val, forces="direct")
    # 1.42 → 0.85 eV/Å (the direct head starts slower than −∂E/∂r: 0.13 eV/Å after 80 epochs)
    assert after["direct_forces_eV_per_A"]["mae"] < 0.7 * before["direct_forces_eV_per_A"]["mae"]
    # validation scored the direct head (the forces of the model in MD) and nothing else
    best = result.best_validation
    assert "forces_eV_per_A" not in best["metrics"]
    row = result.history[best["epoch"]]
    assert row["val_forces_mae_eV_per_A"] == best["metrics"]["direct_forces_eV_per_A"]["mae"]
    assert row[DIRECT_COLUMN] == row["val_forces_mae_eV_per_A"]
    assert DIRECT_COLUMN in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_both_trains_both_heads(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:48]), FrameSet(ethanol_frames[48:])
    config = _config(forces="both", max_epochs=12)
    before = error_metrics(_start(config, train), val, forces="both")
    result = Trainer(config, train, val, tmp_path, progress=False).run()
    after = error_metrics(result.potential, val, forces="both")
    for key, factor in (("forces_eV_per_A", 0.5), ("direct_forces_eV_per_A", 0.85)):
        assert after[key]["mae"] < factor * before[key]["mae"], (key, before[key], after[key])
    # early stopping and the schedule follow −∂E/∂r, the forces a "both" model gives in MD
    best = result.best_validation
    row = result.history[best["epoch"]]
    assert row["val_forces_mae_eV_per_A"] == best["metrics"]["forces_eV_per_A"]["mae"]
    assert row[DIRECT_COLUMN] == best["metrics"]["direct_forces_eV_per_A"]["mae"]


class Interrupt(Exception):
    pass


def test_an_interrupted_direct_run_resumes_to_the_same_weights(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:40]), FrameSet(ethanol_frames[40:])
    config = _config(forces="direct", max_epochs=3, checkpoint_every_seconds=1e-9)
    reference = Trainer(config, train, val, tmp_path / "whole", progress=False).run()

    def stop_mid_epoch(epoch, batches_done):
        if epoch == 1 and batches_done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(
            config, train, val, tmp_path / "cut", progress=False, after_batch=stop_mid_epoch
        ).run()
    resumed = Trainer(config, train, val, tmp_path / "cut", progress=False).run()
    assert len(resumed.history) == len(reference.history) == 3
    for key, value in reference.potential.state_dict().items():
        torch.testing.assert_close(resumed.potential.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    # the same run directory under other forces is another run
    with pytest.raises(InputError, match="this run used forces='direct', not 'both'"):
        Trainer(_config(forces="both", max_epochs=3), train, val, tmp_path / "cut").run()


def test_models_without_a_direct_head_refuse_direct_training(ethanol_frames, tmp_path, capsys):
    for options, named in [
        ({"forces": "direct"}, "--forces direct"),
        ({"forces": "both"}, "--forces both"),
        ({"direct_forces_weight": 1.0}, "--direct-forces-weight 1"),
    ]:
        message = f"{named} trains a direct-force head, which mace"
        with pytest.raises(ValidationError, match=message):
            TrainConfig(model="mace", **options)
    # a starting model of such a kind, given to the trainer
    train, val = FrameSet(ethanol_frames[:8]), FrameSet(ethanol_frames[8:12])
    mace = build_potential("mace", elements=[1, 6, 8])
    with pytest.raises(InputError, match="--forces direct trains a direct-force head, which mace"):
        Trainer(_config(forces="direct"), train, val, tmp_path / "run", potential=mace)
    assert not (tmp_path / "run").exists()
    # on the command line: one line naming the option, before any data is read
    code = _run(["train", "--data", tmp_path / "missing.db", "--n-train", 4, "--n-val", 2,
                 "--out", tmp_path / "m.pt", "--model", "mace", "--forces", "direct"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--forces direct trains a direct-force head, which mace" in err
    assert "missing.db" not in err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ethanol_frames) -> Path:
    """A database, a tiny configuration and a direct model trained on them."""
    root = tmp_path_factory.mktemp("forces")
    write_frames(root / "data.db", ethanol_frames[:36])
    (root / "tiny.yaml").write_text(TINY_YAML)
    code = _run(["train", "--data", root / "data.db", "--n-train", 16, "--n-val", 6,
                 "--out", root / "direct.pt", "--config", root / "tiny.yaml", "--max-epochs", 2,
                 "--forces", "direct", "--no-progress"])  # fmt: skip
    assert code == 0
    return root


def test_a_direct_model_records_its_forces_and_is_evaluated_on_both(workspace, capsys):
    potential = load_potential(workspace / "direct.pt")
    training = potential.metadata["training"]
    assert recorded_forces(potential) == "direct" == training["config"]["forces"]
    assert training["init"] is None
    # validated on the direct head only; the training-set errors show −∂E/∂r too
    assert "forces_eV_per_A" not in potential.metadata["validation"]
    assert "direct_forces_eV_per_A" in potential.metadata["validation"]
    assert {"forces_eV_per_A", "direct_forces_eV_per_A"} <= set(
        potential.metadata["train_set_errors"]
    )
    capsys.readouterr()
    out = workspace / "errors.json"
    code = _run(["evaluate", "--model", workspace / "direct.pt", "--data", workspace / "data.db",
                 "--json", out, "--overwrite"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "direct-head forces (meV/Å)" in printed and "direct-head forces on O" in printed
    metrics = json.loads(out.read_text())
    assert metrics["n_frames"] == 36 - 22
    assert set(metrics["direct_forces_per_element_eV_per_A"]) == {"H", "C", "O"}
    assert metrics["forces_eV_per_A"]["mae"] != metrics["direct_forces_eV_per_A"]["mae"]


def test_the_calculator_of_a_direct_model_gives_the_direct_head(workspace, ethanol_frames):
    potential = load_potential(workspace / "direct.pt")
    atoms = ethanol_frames[50].copy()
    batch = Batch.from_atoms([atoms], dtype=torch.float32)
    expected = predict(potential, batch, ["forces", "direct_forces"])
    atoms.calc = Calculator(potential)
    direct = expected["direct_forces"].detach().double().numpy()
    np.testing.assert_allclose(atoms.get_forces(), direct, rtol=1e-6, atol=1e-6)
    assert not np.allclose(atoms.get_forces(), expected["forces"].double().numpy(), atol=1e-3)
    atoms.calc = Calculator(potential, direct_forces=False)  # an explicit choice wins
    np.testing.assert_allclose(
        atoms.get_forces(), expected["forces"].double().numpy(), rtol=1e-6, atol=1e-6
    )


def test_conservative_fine_tuning_starts_from_the_direct_model(workspace, capsys):
    start = load_potential(workspace / "direct.pt")
    out = workspace / "tuned.pt"
    argv = ["train", "--data", workspace / "data.db", "--n-train", 16, "--n-val", 6,
            "--out", out, "--init", workspace / "direct.pt", "--forces", "conservative",
            "--direct-forces-weight", 1, "--max-epochs", 2, "--seed", 5,
            "--no-progress"]  # fmt: skip
    assert _run(argv) == 0
    assert "from " + str(workspace / "direct.pt") in capsys.readouterr().out.replace("\n", "")
    tuned = load_potential(out)
    training = tuned.metadata["training"]
    assert training["init"] == {
        "model": str((workspace / "direct.pt").resolve()),
        "fingerprint": model_fingerprint(start),
        "forces": "direct",
    }
    # the kind and size are the starting model's (not the defaults), and recorded as such
    assert tuned.hyperparameters() == start.hyperparameters()
    assert training["config"]["model_options"] == {
        k: v for k, v in start.hyperparameters().items() if k != "elements"
    }
    assert recorded_forces(tuned) == "both"  # −∂E/∂r trained, the direct head kept: MTS works
    assert training["config"]["direct_forces_weight"] == 1.0
    # the direct head was kept in training, so it is reported beside −∂E/∂r
    assert {"forces_eV_per_A", "direct_forces_eV_per_A"} <= set(tuned.metadata["validation"])
    assert "direct_forces_eV_per_A" in error_metrics(tuned, _frames(workspace))
    # training went on from the starting weights, not from new ones (seed 5) of the same size
    torch.manual_seed(5)
    fresh = new_potential(TrainConfig(**training["config"]), start.elements).state_dict()

    def distance(a, b):
        return sum(float((a[k] - b[k]).pow(2).sum()) for k in a if k.startswith("messages."))

    weights = start.state_dict()
    assert distance(tuned.state_dict(), weights) < 0.05 * distance(fresh, weights)
    # the starting model's energy scaling is kept (not refitted)
    torch.testing.assert_close(
        tuned.energy_scaling.reference_energies, start.energy_scaling.reference_energies
    )


def _frames(workspace: Path) -> FrameSet:
    from stablemd.data.database import read_frames

    return FrameSet(read_frames(workspace / "data.db")[30:])


def test_a_starting_model_that_does_not_fit_is_refused(workspace, capsys):
    base = ["train", "--data", workspace / "data.db", "--n-train", 16, "--n-val", 6,
            "--max-epochs", 1, "--no-progress"]  # fmt: skip
    other_size = workspace / "eight.yaml"
    other_size.write_text("model_options: {n_features: 12}\n")
    torch.manual_seed(0)
    from stablemd.models.painn import PaiNN
    from stablemd.models.registry import save_potential

    save_potential(PaiNN([1, 6], n_features=8, n_interactions=1), workspace / "hc.pt")
    for extra, expected in [
        (["--init", workspace / "direct.pt", "--out", workspace / "direct.pt", "--overwrite"],
         "--out"),
        (["--init", workspace / "direct.pt", "--out", workspace / "x.pt", "--config", other_size],
         "its n_features is 8, but model_options sets 12"),
        (["--init", workspace / "direct.pt", "--out", workspace / "x.pt", "--model", "mace"],
         "a painn model, but --model mace"),
        (["--init", workspace / "hc.pt", "--out", workspace / "x.pt"],
         "the training frames hold O, which the model does not know"),
        (["--init", workspace / "tiny.yaml", "--out", workspace / "x.pt"],
         "not a stablemd model file"),
    ]:  # fmt: skip
        capsys.readouterr()
        assert _run(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert expected in err.replace("\n", ""), (extra, err)
        assert not (workspace / "x.pt").exists()
        assert not (workspace / "x_run").exists()


def test_a_run_started_from_one_model_is_not_resumed_from_another(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:16]), FrameSet(ethanol_frames[16:24])
    config = _config(max_epochs=2, direct_forces_weight=1.0, checkpoint_every_seconds=1e-9)
    first = _start(_config(forces="direct"), train)
    other = _start(_config(forces="direct", seed=1), train)

    def stop(epoch, batches_done):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(
            config, train, val, tmp_path, potential=first, after_batch=stop, progress=False
        ).run()
    with pytest.raises(InputError, match="this run used initial_weights="):
        Trainer(config, train, val, tmp_path, potential=other, progress=False).run()
