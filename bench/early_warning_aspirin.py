"""Does the early warning warn on aspirin? The CLI index beside the explore uncertainty, the
running energy drift and the kinetic temperature, on the same replicas.

Data: ``--work``/aspirin-xtb-500K.db, 8 trajectories of 5 ps of GFN2-xTB Langevin MD at
500 K, a frame every 5 fs: two ``stablemd data generate aspirin --oracle xtb --temperature 500
--steps 10000 --every 10 --trajectories 4`` runs side by side (seeds 1 and 2), merged with the
second's trajectories numbered 4–7. ``bench/stable_aspirin.py``'s file splits are reused: 64
starts from trajectory 7, which no model saw; the reference h(r) from trajectories 0–4.

Models (PaiNN, 32 features, 3 interactions, ``stablemd train --split-by trajectory``): ``n25``,
``baseline`` (50 frames) and ``labels10x`` (500 frames), and ``stable``: StABlE from
the baseline with λ = 2 (``bench/stable_aspirin.py``'s settings), no new labels. Each model gets
its early warning (``stablemd early-warning fit``: latent domain on its own training frames,
critical level calibrated on the xTB trajectories) and its uncertainty (``stablemd uncertainty
fit``, the default sketched features) for its own weights.

Runs: per model and temperature, ``REPLICAS`` replicas from the held-out starts, Nosé–Hoover,
0.5 fs, bond criterion 0.5 Å, checks every 20 steps (10 fs), at which the run records per
replica: CLI (grade > 2) and the largest atomic grade (from the MD's own forward pass), the
largest atomic uncertainty u (eV/Å; one extra model call per check), the Nosé–Hoover conserved
energy and the kinetic temperature. 500 K for ``LONG_PS`` (so that Δ = 5 ps can be scored),
700 K and 350 K for ``SHORT_PS`` (not the 10×-labels model).

Scores, at every t on a 0.05 ps grid for every replica still stable at t with t + Δ within the
run, against "fails within (t, t + Δ]" (Δ = 1 and 5 ps): CLI past the critical level; CLI over
the level; the flagged fraction and the largest grade over the last ``WINDOW_PS``; the largest
atomic u over that window; |E_cons(t) − E_cons(0)| per atom; |⟨T⟩_window − T|. ROC AUC by the
rank-sum formula; lead times of each continuous score at the threshold that 5 % of the negative
samples pass (chosen on the same data: optimistic).

Stages share one-thread workers (``bench/campaign.py``): ``python bench/early_warning_aspirin.py
--work DIR`` in two shells; ``--collect`` writes ``bench/results/early_warning_aspirin.json`` and
``docs/images/early_warning_aspirin.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import stable_aspirin  # noqa: E402
import torch  # noqa: E402
from campaign import Stage, campaign_arguments, cli, work_loop  # noqa: E402
from early_warning_study import auc  # noqa: E402
from machine import machine_info  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from stablemd.data.database import read_frames, write_frames  # noqa: E402
from stablemd.diagnose.early_warning.index import is_saturated  # noqa: E402
from stablemd.diagnose.early_warning.model_file import stored_early_warning  # noqa: E402
from stablemd.diagnose.early_warning.settings import latent_index  # noqa: E402
from stablemd.diagnose.energy_drift import EnergyRecorder  # noqa: E402
from stablemd.diagnose.stability.benchmark import (  # noqa: E402
    StabilitySettings,
    stability_monitors,
)
from stablemd.explore.uncertainty.estimator import require_uncertainty  # noqa: E402
from stablemd.md.monitoring import Observer  # noqa: E402
from stablemd.md.runner import run  # noqa: E402
from stablemd.md.starts import initial_state  # noqa: E402
from stablemd.models.registry import load_potential  # noqa: E402
from stablemd.systems import get_system  # noqa: E402

DATA = "aspirin-xtb-500K.db"
TRAINED = {"n25": (25, 6), "baseline": (50, 8), "labels10x": (500, 12)}
MODELS = ("baseline", "stable", "n25", "labels10x")
REPLICAS = 32
LONG_PS, SHORT_PS = 10.0, 5.0
TEMPERATURES = {500.0: LONG_PS, 700.0: SHORT_PS, 350.0: SHORT_PS}
#: The models run away from 500 K (the well-trained one is stable there already).
OTHER_TEMPERATURE_MODELS = ("baseline", "stable", "n25")
DELTAS_PS = (1.0, 5.0)
GRID_PS = 0.05
WINDOW_PS = 0.25
FALSE_ALARM = 0.05
#: Floors of the critical level tried, as flagged fractions of the calibration length.
FLOORS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3)
SCORES = (
    "cli_crossed", "cli_over_level", "flagged_recent", "max_grade_recent", "max_u_recent",
    "energy_drift", "temperature_deviation",
)  # fmt: skip


class UncertaintyRecorder(Observer):
    """The largest atomic uncertainty (eV/Å) of each active replica (NaN: frozen)."""

    name = "max_atomic_uncertainty"

    def __init__(self, potential, every: int):
        super().__init__(every)
        self.potential, self.uncertainty = potential, require_uncertainty(potential)
        self.rows: list[torch.Tensor] = []

    def __call__(self, state) -> None:
        largest = torch.full((state.n_systems,), float("nan"), dtype=torch.float64)
        if bool(state.active.any()):
            dtype = next(self.potential.parameters()).dtype
            batch = state.batch(dtype)
            atomic = self.uncertainty.predict(self.potential, batch)["atomic_uncertainty"]
            per_replica = state.max_per_system(atomic.detach().double())
            largest[state.active] = per_replica[state.active]
        self.rows.append(largest)

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])


def part_stage(work: Path, seed: int) -> dict:
    """Four trajectories of the data (rerunning the command resumes it)."""
    if not (work / f"part{seed}.db").is_file():
        cli(["data", "generate", "aspirin", "--oracle", "xtb", "--temperature", 500,
             "--steps", 10000, "--every", 10, "--trajectories", 4, "--seed", seed,
             "--out", work / f"part{seed}.db", "--quiet"], work / f"part{seed}.log")  # fmt: skip
    return {}


def data_stage(work: Path) -> dict:
    """The two parts as one database of trajectories 0–7."""
    if not (work / DATA).is_file():
        first, second = read_frames(work / "part1.db"), read_frames(work / "part2.db")
        for atoms in second:
            atoms.info["trajectory"] += 4
        write_frames(work / DATA, first + second)
    return {}


def train_stage(work: Path, name: str) -> dict:
    n_train, minutes = TRAINED[name]
    if not (work / f"{name}.pt").is_file():
        cli(["train", "--data", work / DATA, "--n-train", n_train, "--n-val", 50,
             "--out", work / f"{name}.pt", "--config", work / "painn-small.yaml",
             "--max-time", minutes, "--split-by", "trajectory", "--seed", 0, "--no-progress"],
            work / f"{name}.log")  # fmt: skip
    return {"n_train": n_train, "minutes": minutes}


def splits_stage(work: Path) -> dict:
    stable_aspirin.split_files(work, work / DATA)
    return {}


def stable_stage(work: Path) -> dict:
    if not (work / "stable.pt").is_file():
        config = work / "stable.yaml"
        config.write_text(stable_aspirin.STABLE_CONFIG)
        cli(["stable-train", "--model", work / "baseline.pt", "--data", work / DATA,
             "--out", work / "stable.pt", "--system", "aspirin", "--config", config,
             "--max-time", 120, "--reference", work / "reference-sim.db", "--no-progress"],
            work / "stable.log")  # fmt: skip
    return {}


def prepare_stage(work: Path, name: str) -> dict:
    """``name-ew.pt``: the model with its own early warning and uncertainty."""
    final = work / f"{name}-ew.pt"
    if not final.is_file():
        with_warning = work / f"{name}-warning.pt"
        if not with_warning.is_file():
            cli(["early-warning", "fit", "--model", work / f"{name}.pt", "--data", work / DATA,
                 "--out", with_warning], work / f"prepare-{name}.log")  # fmt: skip
        cli(["uncertainty", "fit", "--model", with_warning, "--data", work / DATA,
             "--out", final], work / f"prepare-{name}.log")  # fmt: skip
    early_warning = stored_early_warning(load_potential(final))
    level = early_warning.critical_levels["grade"]
    return {"level_ps": level.level_ps, "calibration_ps": level.calibration_ps}


def run_stage(work: Path, name: str, temperature: float, time_ps: float) -> dict:
    """The MD of one model at one temperature with every score's series (``runs/*.npz``)."""
    out = work / "runs" / f"{name}-{temperature:g}K.npz"
    if out.is_file():
        return {}
    out.parent.mkdir(exist_ok=True)
    potential = load_potential(work / f"{name}-ew.pt")
    early_warning = stored_early_warning(potential)
    settings = StabilitySettings(replicas=REPLICAS, temperature_K=temperature, time_ps=time_ps,
                                 seed=0)  # fmt: skip
    integrator = settings.integrator()
    every = settings.check_every
    monitors = stability_monitors(get_system("aspirin"), settings, None, early_warning)
    energies, uncertainty = EnergyRecorder(integrator, every), UncertaintyRecorder(potential, every)
    starts = read_frames(work / "starts64.db")
    state = initial_state(starts, REPLICAS, temperature, settings.seed)
    result = run(
        state, integrator, settings.force_term(potential, outputs=("features",)),
        round(time_ps * 1000 / settings.step_fs), [*monitors, energies, uncertainty],
        checkpoint=out.with_suffix(".checkpoint.pt"), checkpoint_every=2000, progress=False,
    )  # fmt: skip
    series = latent_index(monitors).series()
    recorded = energies.arrays()
    level = early_warning.critical_levels["grade"]
    failure = result.unstable_time_fs.double().numpy() / 1000.0
    np.savez(
        out, times_ps=series["times_ps"].numpy(), cli_ps=series["cli_ps"].numpy(),
        max_grade=series["max_grade"].numpy(), max_u=torch.stack(uncertainty.rows).numpy(),
        conserved_eV=recorded["conserved"], temperature_K=recorded["temperature"],
        active=recorded["active"], failure_ps=np.where(np.isfinite(failure), failure, np.nan),
        run_ps=time_ps, target_K=temperature, n_atoms=state.n_atoms // REPLICAS,
        level_ps=level.level_ps, calibration_ps=level.calibration_ps,
        wall_time_s=result.wall_time_s,
    )  # fmt: skip
    out.with_suffix(".checkpoint.pt").unlink(missing_ok=True)
    return {"wall_time_s": result.wall_time_s, "failed": int(np.isfinite(failure).sum())}


def plan() -> list[Stage]:
    stages = [Stage(f"part-{seed}", [], part_stage, (seed,)) for seed in (1, 2)]
    stages.append(Stage("data", ["part-1", "part-2"], data_stage))
    stages += [Stage(f"train-{n}", ["data"], train_stage, (n,)) for n in TRAINED]
    stages += [Stage("splits", ["train-baseline"], splits_stage),
               Stage("stable", ["splits"], stable_stage)]  # fmt: skip
    for name in MODELS:
        trained = "stable" if name == "stable" else f"train-{name}"
        stages.append(Stage(f"prepare-{name}", [trained, "splits"], prepare_stage, (name,)))
    for temperature, time_ps in TEMPERATURES.items():
        for name in MODELS if temperature == 500.0 else OTHER_TEMPERATURE_MODELS:
            stages.append(Stage(f"run-{name}-{temperature:g}K", [f"prepare-{name}"], run_stage,
                                (name, temperature, time_ps)))  # fmt: skip
    return stages


def _trailing(values: np.ndarray, width: int, reduce) -> np.ndarray:
    """``reduce`` over the last ``width`` calls up to each call [n_t, R] (NaN-aware)."""
    out = np.full_like(values, np.nan)
    for k in range(len(values)):
        window = values[max(0, k - width + 1) : k + 1]
        finite = np.isfinite(window).any(axis=0)
        out[k, finite] = reduce(window[:, finite], axis=0)
    return out


def score_series(record: dict, floor: float = 0.0) -> dict[str, np.ndarray]:
    """Each score [n_t, R] at the recorded calls; the critical level raised to at least
    ``floor`` × T_cal (a flagged fraction the calibration runs may have stayed below)."""
    times, cli_ps = record["times_ps"], record["cli_ps"]
    width = max(1, round(WINDOW_PS / float(times[1] - times[0])))
    calibration = record["calibration_ps"]
    level_ps = max(float(record["level_ps"]), floor * calibration)
    level = level_ps * np.maximum(1.0, times / calibration)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # a level of 0: any flag passes it
        over = np.where(level > 0, cli_ps / level, np.where(cli_ps > 0, np.inf, 0.0))
    over[np.isnan(cli_ps)] = np.nan
    lag = np.maximum(np.arange(len(times)) - width, 0)
    lagged, span = cli_ps[lag], (times - times[lag])[:, None]
    return {
        "cli_crossed": np.fmax.accumulate(np.where(np.isnan(over), np.nan, over > 1), axis=0),
        "cli_over_level": over,
        "flagged_recent": np.divide(
            cli_ps - lagged, span, out=np.zeros_like(cli_ps), where=span > 0
        ),  # fmt: skip
        "max_grade_recent": _trailing(record["max_grade"], width, np.nanmax),
        "max_u_recent": _trailing(record["max_u"], width, np.nanmax),
        "energy_drift": np.abs(record["conserved_eV"] - record["conserved_eV"][0])
        / record["n_atoms"],
        "temperature_deviation": np.abs(
            _trailing(record["temperature_K"], width, np.nanmean) - record["target_K"]
        ),
    }


def samples(
    record: dict, scores: dict[str, np.ndarray], delta_ps: float
) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """The ``scores`` (:func:`score_series` of ``record``) at the grid times and labels "fails
    within (t, t + Δ]" over replicas stable at t; with (replica, t) of each sample."""
    times, failure, run_ps = record["times_ps"], record["failure_ps"], float(record["run_ps"])
    values = {k: [] for k in SCORES}
    labels, where = [], []
    for t in np.arange(0.0, run_ps - delta_ps + 1e-9, GRID_PS):
        k = int(np.searchsorted(times, t + 1e-9) - 1)
        for r in range(len(failure)):
            end = failure[r] if np.isfinite(failure[r]) else np.inf
            if t >= end:
                continue
            for name in SCORES:
                values[name].append(scores[name][k, r])
            labels.append(end <= t + delta_ps)
            where.append((r, t))
    return {k: np.asarray(v, dtype=float) for k, v in values.items()}, np.asarray(labels), where


def lead_times(record: dict, scores: np.ndarray, threshold: float) -> dict:
    """The lead times (ps) of the failed replicas whose score [n_t, R] passed ``threshold``
    before they failed (failure − first such call), how many failed unwarned, how many stable
    replicas passed it."""
    times, failure = record["times_ps"], record["failure_ps"]
    leads, false_alarms, missed = [], 0, 0
    for r in range(len(failure)):
        above = np.nonzero(np.nan_to_num(scores[:, r], nan=-np.inf) > threshold)[0]
        first = times[above[0]] if len(above) else None
        if not np.isfinite(failure[r]):
            false_alarms += first is not None
        elif first is None or first >= failure[r]:
            missed += 1
        else:
            leads.append(float(failure[r] - first))
    return {"leads": leads, "missed": missed, "stable_alarmed": false_alarms}


def time_stratified_auc(scores: np.ndarray, labels: np.ndarray, times: np.ndarray):
    """ROC AUC over the (positive, negative) pairs of samples taken at the same time: the score
    must rank the replicas that fail within Δ above those still alive at t + Δ *at the same t*,
    so that a score which merely grows with time (as every cumulative one does, while early
    times hold most failures) earns nothing from it. None without such pairs."""
    concordant = pairs = 0.0
    for t in np.unique(times):
        at = times == t
        positives, negatives = int(labels[at].sum()), int((~labels[at]).sum())
        if positives == 0 or negatives == 0:
            continue
        ranks = rankdata(scores[at])
        concordant += ranks[labels[at]].sum() - positives * (positives + 1) / 2
        pairs += positives * negatives
    return float(concordant / pairs) if pairs else None


def analyse(records: dict[str, dict], delta_ps: float, floor: float = 0.0) -> dict:
    """AUCs of every score over the runs given (time-stratified, and pooled over all times),
    and lead times at the threshold that ``FALSE_ALARM`` of the negative samples pass (the
    critical level raised to ``floor`` × T_cal)."""
    scored = {key: score_series(record, floor) for key, record in records.items()}
    pooled = {k: [] for k in SCORES}
    labels, times = [], []
    for key, record in records.items():
        values, run_labels, where = samples(record, scored[key], delta_ps)
        for k in SCORES:
            pooled[k].append(values[k])
        labels.append(run_labels)
        times.append(np.array([round(t / GRID_PS) for _, t in where], dtype=int))
    if not labels or not np.concatenate(labels).size:
        return {"samples": 0}
    labels, times = np.concatenate(labels), np.concatenate(times)
    out = {"samples": int(len(labels)), "positive": int(labels.sum()), "scores": {}}
    for k in SCORES:
        values = np.concatenate(pooled[k])
        usable = np.isfinite(values)
        row = {
            "auc": time_stratified_auc(values[usable], labels[usable], times[usable]),
            "auc_all_times": auc(values[usable], labels[usable]),
        }
        negatives = values[usable & ~labels]
        if k == "cli_crossed":
            threshold = 0.5
        elif len(negatives):
            threshold = float(np.quantile(negatives, 1 - FALSE_ALARM))
        else:
            threshold = None
        if threshold is not None:
            counts = [lead_times(r, scored[key][k], threshold) for key, r in records.items()]
            leads = [x for c in counts for x in c["leads"]]
            row.update({
                "threshold": threshold,
                "warned": len(leads),
                "warned_1ps_ahead": sum(x >= 1.0 for x in leads),
                "missed": sum(c["missed"] for c in counts),
                "stable_alarmed": sum(c["stable_alarmed"] for c in counts),
                "median_lead_ps": float(np.median(leads)) if leads else None,
            })  # fmt: skip
        out["scores"][k] = row
    return out


def claims(records: dict[str, dict]) -> dict:
    """The paper's claims per run: the mean flagged fraction CLI(end)/end, saturated replicas
    against survival, and the rank correlation over replicas of the CLI's growth with the
    energy drift's (|ΔE_cons| per atom per ps up to the call before the end)."""
    from scipy.stats import spearmanr

    rows, growth, drift = {}, [], []
    for key, record in records.items():
        times, cli_ps, failure = record["times_ps"], record["cli_ps"], record["failure_ps"]
        replicas = np.arange(cli_ps.shape[1])
        last = np.isfinite(cli_ps).sum(axis=0) - 1
        before = np.maximum(last - 1, 1)
        fraction = cli_ps[last, replicas] / np.maximum(times[last], 1e-9)
        conserved = record["conserved_eV"]
        drift_rate = np.abs(conserved[before, replicas] - conserved[0]) / times[before]
        drift_rate /= record["n_atoms"]
        saturated = is_saturated(times, cli_ps, 0.2 * float(record["run_ps"])).numpy()
        stable = ~np.isfinite(failure)
        growth += list(fraction)
        drift += list(drift_rate)
        rows[key] = {
            "failed": int((~stable).sum()),
            "replicas": len(failure),
            "median_stable_ps": float(np.median(np.where(stable, record["run_ps"], failure))),
            "mean_flagged_fraction": float(fraction.mean()),
            "mean_flagged_fraction_failed": float(fraction[~stable].mean()) if (~stable).any()
            else None,
            "mean_flagged_fraction_stable": float(fraction[stable].mean()) if stable.any()
            else None,
            "mean_drift_eV_per_atom_per_ps": float(np.nanmean(drift_rate)),
            "saturated": int(saturated.sum()),
            "saturated_stable": int((saturated & stable).sum()),
        }  # fmt: skip
    usable = np.isfinite(growth) & np.isfinite(drift)
    rho = spearmanr(np.asarray(growth)[usable], np.asarray(drift)[usable])
    return {"runs": rows, "spearman_cli_growth_vs_drift": float(rho.statistic)}


def figure(results: dict, records: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.3))
    left, middle, right = fig.subplots(1, 3)
    example = records.get("baseline-500K")
    if example is not None:
        times = example["times_ps"]
        level = example["level_ps"] * np.maximum(1.0, times / example["calibration_ps"])
        for r in range(example["cli_ps"].shape[1]):
            failed = np.isfinite(example["failure_ps"][r])
            left.plot(times, example["cli_ps"][:, r], color="C3" if failed else "C0", lw=0.7)
        left.plot(times, level, "k--", lw=1, label="critical level")
        left.set(xlabel="time (ps)", ylabel="CLI (ps)", title="baseline, 500 K (red: failed)")
        left.legend(frameon=False)
    x = np.arange(len(SCORES))
    for k, delta in enumerate(DELTAS_PS):
        pooled = results["pooled"][f"delta_{delta:g}ps"]
        aucs = [pooled["scores"][s]["auc"] if pooled.get("scores") else np.nan for s in SCORES]
        middle.bar(x + 0.4 * k - 0.2, [np.nan if a is None else a for a in aucs], 0.4,
                   label=f"Δ = {delta:g} ps")  # fmt: skip
    middle.axhline(0.8, color="k", ls="--", lw=1)
    middle.axhline(0.5, color="grey", lw=0.8)
    middle.set_xticks(x, SCORES, rotation=35, ha="right", fontsize=8)
    middle.set(ylabel="ROC AUC (pooled)", ylim=(0.3, 1.0), title="fails within Δ?")
    middle.legend(frameon=False)
    for temperature in sorted({key.split("-")[-1] for key in records}):
        row = results["per_temperature"].get(f"{temperature}_delta_1ps", {})
        aucs = [row["scores"][s]["auc"] if row.get("scores") else None for s in SCORES]
        right.plot(x, [np.nan if a is None else a for a in aucs], "o-", label=temperature)
    right.axhline(0.8, color="k", ls="--", lw=1)
    right.set_xticks(x, SCORES, rotation=35, ha="right", fontsize=8)
    right.set(ylabel="ROC AUC, Δ = 1 ps", ylim=(0.3, 1.0), title="per temperature")
    right.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def collect(work: Path, out: Path, image: Path) -> dict:
    records = {path.stem: dict(np.load(path)) for path in sorted((work / "runs").glob("*.npz"))}
    results = {"machine": machine_info(), "replicas": REPLICAS, "window_ps": WINDOW_PS,
               "false_alarm": FALSE_ALARM, "runs": sorted(records), "pooled": {},
               "per_temperature": {}, "per_run": {}}  # fmt: skip
    for delta in DELTAS_PS:
        results["pooled"][f"delta_{delta:g}ps"] = analyse(records, delta)
        for temperature in sorted({key.split("-")[-1] for key in records}):
            chosen = {k: v for k, v in records.items() if k.endswith(temperature)}
            results["per_temperature"][f"{temperature}_delta_{delta:g}ps"] = analyse(chosen, delta)
    for key, record in records.items():
        results["per_run"][key] = analyse({key: record}, 1.0)
    results["level_floor_scan"] = {
        f"floor_{floor:g}_delta_{delta:g}ps": analyse(records, delta, floor)["scores"].get(
            "cli_crossed"
        )
        for floor in FLOORS
        for delta in DELTAS_PS
    }
    results["claims"] = claims(records)
    results["models"] = {
        p.stem.removeprefix("prepare-"): json.loads(p.read_text())
        for p in sorted((work / "stages").glob("prepare-*.json"))
    }
    out.write_text(json.dumps(results, indent=1))
    figure(results, records, image)
    return results


def command_line() -> None:
    args = campaign_arguments(__doc__.split("\n")[0], HERE / "data" / "early-warning-aspirin")
    (args.work / "painn-small.yaml").write_text(stable_aspirin.MODEL_CONFIG)
    if args.collect:
        results = collect(args.work, HERE / "results" / "early_warning_aspirin.json",
                          ROOT / "docs" / "images" / "early_warning_aspirin.png")  # fmt: skip
        print(json.dumps(results["pooled"], indent=1))
        return
    work_loop(args.work, plan(), args.words, args.until)


if __name__ == "__main__":
    command_line()
