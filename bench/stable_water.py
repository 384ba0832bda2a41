"""StABlE on SPC/Fw water (64 molecules, OpenMM) at 300 K with the localized estimator.

The paper's water recipe (METHODS.md §1, the authors' water config), scaled to this machine: the
local estimator on single-molecule neighbourhoods, their O–H bond length as the observable
(``molecule_bond_length``), the minimum-intermolecular-distance criterion (1.2 Å) while
training, no energy-and-force term (λ = 0), SGD at 3e-3 with the gradient clipped to 1,
learning from 75 % unstable down to 0 %; 8 replicas as in the paper, but 300-step epochs
instead of 1000 and a 40-minute budget.

Data: STABLEMD_BENCH_DATA, a water database of 2 trajectories (default: made by this script
with ``stablemd data generate water --temperature 300 --steps 5000 --every 10 --trajectories 2
--seed 0``, 2 minutes on one core); STABLEMD_BENCH_WORK, the working directory. Trajectory 0
holds the baseline's 100 training frames (1 ps); trajectory 1 gives the test frames (every 5th),
16 held-out starts and the reference simulation (its 500 positions, 5 ps), whose h(r) is the
reference. The reference diffusivities come from SPC/Fw itself run like the models (same
starts, velocities, Nosé–Hoover thermostat and MSD observer,
``stablemd.diagnose.stability.diffusion``): the data's Langevin friction would slow diffusion.

Stability: 16 replicas from the held-out starts, Nosé–Hoover, 1 fs, 5 ps, contacts under 1.2 Å.
Writes ``stable_water.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stages  # noqa: E402
from machine import machine_info  # noqa: E402

from stablemd.data.database import read_frames, write_frames  # noqa: E402
from stablemd.data.formats import read_positions  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability  # noqa: E402
from stablemd.md.forces import CalculatorForces  # noqa: E402
from stablemd.oracles import get_oracle  # noqa: E402
from stablemd.systems import get_system  # noqa: E402

MODEL_CONFIG = stages.painn_config(n_interactions=2, cutoff=4.5, batch_size=4)
STABLE_CONFIG = """optimizer: sgd
learning_rate: 0.003
gradient_clip: 1.0
max_epochs: 60
"""
STABLE_OPTIONS = (
    "--system", "water", "--estimator", "local", "--observable", "molecule_bond_length",
    "--criterion", "min_nonbonded_distance", "--temperature", "300", "--timestep", "1",
    "--replicas", "8", "--steps-per-epoch", "300", "--f-max", "0.75", "--f-min", "0",
    "--qm-weight", "0", "--max-time", "40",
)  # fmt: skip
STABILITY_OPTIONS = (
    "--system", "water", "--replicas", "16", "--temperature", "300", "--time-ps", "5",
)  # fmt: skip


def split_files(work: Path, data: Path) -> None:
    """Test frames, held-out starts and the reference simulation, all from trajectory 1."""
    if (work / "reference-sim.db").is_file():
        return
    held_out = [a for a in read_frames(data) if a.info.get("trajectory") == 1]
    write_frames(work / "test-frames.db", held_out[::5], overwrite=True)
    write_frames(work / "starts.db", stages.spaced(held_out, 16), overwrite=True)
    stages.write_positions(work / "reference-sim.db", held_out)


def reference_diffusivity(work: Path) -> dict[str, float | None]:
    """D (cm²/s) of O and H under SPC/Fw itself, run by the models' stability benchmark (same
    starts, velocities, thermostat and MSD observer), so the figures compare directly."""
    water = get_system("water")
    settings = StabilitySettings(replicas=16, temperature_K=300.0, time_ps=5.0, timestep_fs=1.0)
    reference = CalculatorForces(get_oracle(water.default_oracle))
    starts = read_positions(work / "starts.db")
    result = run_stability(
        reference, water, starts, settings, work / "reference-md", "SPC/Fw", progress=False
    )
    return result.diffusivity_cm2_per_s


def main(out_dir: Path, quick: bool = False) -> dict:
    if quick:
        return {"skipped": "an hour of work; run it without --quick"}
    work, data = stages.workspace(
        "stable-water", "water-spcfw-300K.db",
        lambda path: generate_reference_data("water", None, 300.0, 5000, 10, path, 2),
    )  # fmt: skip
    (work / "painn-small.yaml").write_text(MODEL_CONFIG)
    started = time.perf_counter()
    stages.train(work, data, "baseline", 100, 20, 6)
    split_files(work, data)
    (work / "stable.yaml").write_text(STABLE_CONFIG)
    if not (work / "stable.pt").is_file():
        stages.stablemd(
            "stable-train", "--model", str(work / "baseline.pt"), "--data", str(data),
            "--out", str(work / "stable.pt"), "--config", str(work / "stable.yaml"),
            "--reference", str(work / "reference-sim.db"), *STABLE_OPTIONS,
            log=work / "stable.log",
        )  # fmt: skip
    result = {
        "machine": machine_info(),
        "data": str(data),
        "models": {name: stages.model_row(work, name) for name in ("baseline", "stable")},
        "reference_diffusivity_cm2_per_s": reference_diffusivity(work),
        "stability": stages.stability(
            work,
            ["baseline", "stable"],
            "stability-300K",
            *STABILITY_OPTIONS,
            "--starts",
            str(work / "starts.db"),
            "--reference",
            str(work / "reference-sim.db"),
        ),
    }
    return stages.finish(out_dir, "stable_water", result, started)
