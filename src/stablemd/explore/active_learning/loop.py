"""The batch active-learning loop behind ``stablemd explore`` (docs/explore.md).

From a model with an uncertainty and the database it was trained on, each step:

1. ``pool``: uncertainty-biased MD of R replicas from the starting model's training structures
   (:mod:`~stablemd.explore.active_learning.pool`);
2. ``selected``: a batch of the pool by max-det, max-dist or random on the structure features,
   or by max-grade on the current model's atomic latent features
   (:mod:`~stablemd.explore.active_learning.selection`);
3. ``labelled``: oracle labels through the labeller (Dask or in process), each stored as it
   arrives under its request id (:mod:`~stablemd.explore.active_learning.labelling`);
4. ``appended``: the labels added to the run's training database with their provenance
   (``source="explore"``, ``explore_step``, ``score``, ``score_atom`` (max-grade),
   ``replica``, ``time_fs``, ``label_id``), in one transaction, skipping ids already there;
   failed labels are recorded and skipped;
5. ``retrained``: the model trained further from its own weights on the enlarged database
   (:func:`~stablemd.training.workflow.train_from_database` with ``init``), with the options it
   was first trained with but ``epochs``;
6. ``uncertainty``: its uncertainty refitted with the settings of the previous one, and the
   learning curve extended,

until the label budget is spent. The run directory holds ``run.json`` (the options and
fingerprints of the inputs), ``state.json`` (:mod:`~stablemd.explore.active_learning.record`),
``train.db``, one ``step-NNN`` directory per step, ``learning_curve.json``/``.png``, and at the
end ``model.pt`` and ``summary.md``. Every stage is recorded when done, and everything a stage
writes is written atomically or recomputed identically, so a run killed at any moment and
rerun finishes with the labels of a run never interrupted, none of them requested twice.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from stablemd.core.errors import InputError
from stablemd.core.files import (
    atomic_write,
    read_json_record,
    record_run_options,
    save_torch_file,
    write_json,
)
from stablemd.data.database import connect, key_value_pairs, read_frames, write_frames
from stablemd.data.fingerprints import labelled_frames_fingerprint
from stablemd.data.frames import FrameSet
from stablemd.data.splits import Split
from stablemd.explore.active_learning.curve import test_set_scores, write_learning_curve
from stablemd.explore.active_learning.labelling import (
    Labeller,
    LabelRequest,
    OracleSpec,
    label_here,
)
from stablemd.explore.active_learning.pool import Pool, run_pool
from stablemd.explore.active_learning.record import ExploreRecord
from stablemd.explore.active_learning.selection import Selection, select, select_max_grade
from stablemd.explore.uncertainty.estimator import Uncertainty, require_uncertainty
from stablemd.explore.uncertainty.fit import structure_features
from stablemd.explore.uncertainty.workflow import fit_model_uncertainty
from stablemd.md.settings import MDSettings
from stablemd.models.latent_domain import latent_features
from stablemd.models.potential import Potential
from stablemd.models.registry import load_potential, model_fingerprint
from stablemd.oracles.label import LabelResult
from stablemd.oracles.registry import level_of_theory
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import locate_training_frames, train_from_database

#: Told each point of the loop once what came before it is on disk: a stage's name once it is
#: recorded, ``label:N`` once the N-th label of a step is stored, ``rows`` once the labels are
#: in the database but before that stage is recorded (where the resume tests stop a run).
DurablePoint = Callable[[str], None]
#: Options a continued run may change.
EXTENSIBLE = frozenset({"budget"})


class ExploreSettings(BaseModel):
    """What an explore run is told (times fs, temperatures K, u in eV/Å)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    oracle: str = "xtb"
    budget: int = Field(32, ge=1, description="oracle calls in all (failed ones count)")
    per_step: int = Field(8, ge=1, description="structures labelled per step")
    replicas: int = Field(8, ge=1, description="biased replicas of the pool")
    pool_steps: int = Field(2000, ge=1, description="MD steps of the pool at most")
    every: int = Field(50, ge=1, description="steps between pool frames")
    temperature_K: float = Field(300.0, gt=0)
    timestep_fs: float = Field(0.5, gt=0, le=10.0)
    tau: float = Field(0.25, ge=0, description="relative bias strength τ")
    stop_uncertainty: float | None = Field(
        1.5, gt=0, description="a replica stops once an atom's u passes this, eV/Å"
    )
    selection: Literal["max-det", "max-dist", "random", "max-grade"] = "max-det"
    epochs: int = Field(100, ge=1, description="training epochs per step")
    seed: int = 0

    def md(self, step: int) -> MDSettings:
        """The pool's MD settings of ``step`` (Langevin; starts and noise seeded per step)."""
        return MDSettings(
            replicas=self.replicas, temperature_K=self.temperature_K,
            timestep_fs=self.timestep_fs, thermostat="langevin", seed=self.seed + 1000 * step,
        )  # fmt: skip


@dataclass
class StepContext:
    """What a per-step metrics hook sees: the step and its directory (where a hook may draw),
    the model and uncertainty after it, the pool it explored, the structures labelled in it and
    the database of every label so far."""

    step: int
    directory: Path
    potential: Potential
    uncertainty: Uncertainty
    pool: Pool | None
    labelled: list[Atoms]
    train_db: Path


#: An optional per-step hook (e.g. the Ramachandran coverage of the pool): its dictionary is
#: stored in the learning curve under ``step_metrics``.
StepMetrics = Callable[[StepContext], dict]


@dataclass
class ExploreResult:
    record: ExploreRecord
    curve: list[dict]
    model: Path


def _step_dir(out: Path, step: int) -> Path:
    return out / f"step-{step:03d}"


class ExploreRun:
    """One explore run in the directory ``out`` (see the module docstring). Everything given
    is checked, and the options recorded in ``run.json``, when it is made (after removing an
    earlier run there with ``overwrite``); :meth:`run` runs. ``on_stage(step, stage, info)`` is
    told each finished stage, ``after`` each :data:`DurablePoint`."""

    def __init__(
        self,
        model: Path,
        data: Path,
        out: Path,
        settings: ExploreSettings,
        oracle_options: dict | None = None,
        tests: tuple[Path, ...] = (),
        step_metrics: StepMetrics | None = None,
        progress: bool = False,
        on_stage: Callable[[int, str, dict], None] | None = None,
        overwrite: bool = False,
        after: DurablePoint | None = None,
    ):
        self.model_path, self.data, self.out = Path(model), Path(data), Path(out)
        inputs = {"--model": model, "--data": data, "--test": tests}
        check_run_directory(self.out, inputs, overwrite)
        names = {"held-out"}  # the learning curve names each test set
        for path in tests:
            if Path(path).name in names:
                raise InputError(
                    f"--test {path}: a test set named {Path(path).name} is already there; "
                    "rename the file"
                )
            names.add(Path(path).name)
        self.settings, self.hook = settings, step_metrics
        self.labeller: Labeller = label_here
        self.spec = OracleSpec(settings.oracle, tuple(sorted((oracle_options or {}).items())))
        self.progress = progress
        self.on_stage = on_stage or (lambda step, stage, info: None)
        self.after = after or (lambda point: None)
        self.level = level_of_theory(self.spec.build())  # an unknown oracle is refused here
        self.potential = load_potential(model)
        self.uncertainty = require_uncertainty(self.potential, str(model))
        self.config = self._training_config()
        frames = read_frames(data)
        located = locate_training_frames(self.potential.metadata, self.data, frames)
        if not located.train or not located.val:
            raise InputError(f"{data}: does not hold the training and validation frames of {model}")
        self.initial = [frames[i] for i in located.train + located.val]
        #: where every pool starts: the model's own training structures, near which u is low
        self.starts = [frames[i] for i in located.train]
        used = sorted(located.train + located.val + located.held_out)
        check_level_of_theory([(i, frames[i]) for i in used], str(data), self.level, self.spec)
        self.n_val = len(located.val)
        self.test_sets = {}
        if located.held_out:
            self.test_sets["held-out"] = FrameSet([frames[i] for i in located.held_out])
        for path in tests:
            test_frames = read_frames(path)
            check_level_of_theory(list(enumerate(test_frames)), str(path), self.level, self.spec)
            self.test_sets[Path(path).name] = FrameSet(test_frames)
        if not self.test_sets:
            raise InputError(
                f"{data}: every frame trains or validates {model}, so the learning curve has no "
                "test frames; give --test databases"
            )
        options = {
            "model": model_fingerprint(self.potential),
            "uncertainty": self.uncertainty.fingerprint(),
            "data": labelled_frames_fingerprint(frames),
            "tests": {n: s.fingerprint for n, s in self.test_sets.items()},
            "oracle": self.spec.describe(),
            **settings.model_dump(),
        }
        if overwrite:
            remove_run(self.out)
        else:
            self._refuse_budget_below_spent()
        record_run_options(options, self.out / "run.json", may_change=EXTENSIBLE)

    # ------------------------------------------------------------------ helpers
    def _refuse_budget_below_spent(self) -> None:
        """A continued run may not be given a budget below the oracle calls it has made or
        committed to (the structures of a recorded selection)."""
        record = ExploreRecord.load(self.state_path)
        if record is None:
            return
        spent = record.labels_used
        if record.stage == "selected":
            spent += len(self._selection(record.step))
        if spent > self.settings.budget:
            raise InputError(
                f"--budget {self.settings.budget}: the run in {self.out} has made or selected "
                f"{spent} oracle calls already; give at least that"
            )

    def _training_config(self) -> TrainConfig:
        recorded = self.potential.metadata.get("training", {}).get("config")
        if recorded is None:
            raise InputError(f"{self.model_path}: records no training options to continue with")
        values = {**recorded, "max_epochs": self.settings.epochs, "max_time_minutes": None}
        return TrainConfig.model_validate(values)

    @property
    def state_path(self) -> Path:
        return self.out / "state.json"

    @property
    def train_db(self) -> Path:
        return self.out / "train.db"

    @property
    def curve_path(self) -> Path:
        return self.out / "learning_curve.json"

    def _curve(self) -> list[dict]:
        if not self.curve_path.is_file():
            return []
        return read_json_record(self.curve_path, "learning curve", keys=("steps",))["steps"]

    def _model_path(self, record: ExploreRecord) -> Path:
        # the run's --model: given again on a resume (its fingerprint checked), wherever it
        # lies now; runs of earlier versions recorded its absolute path
        if not record.model or Path(record.model).is_absolute():
            return self.model_path
        return self.out / record.model

    def _save(self, record: ExploreRecord, step: int, stage: str, info: dict | None = None):
        record.step, record.stage = step, stage
        record.save(self.state_path)
        self.on_stage(step, stage, info or {})
        self.after(stage)

    # ------------------------------------------------------------------ the loop
    def run(self, labeller: Labeller = label_here) -> ExploreResult:
        """Run (or continue) to the budget, labelling with ``labeller`` (in this process by
        default; :class:`~stablemd.explore.active_learning.labelling.DaskLabeller`)."""
        self.labeller = labeller
        record = ExploreRecord.load(self.state_path)
        if record is None:
            record = self._start()
        record.finished = record.labels_used >= self.settings.budget and record.stage in (
            "start", "uncertainty",
        )  # fmt: skip
        while not record.finished:
            step, stage = record.next_stage()
            getattr(self, "_" + stage)(record, step)
            if stage == "uncertainty" and record.labels_used >= self.settings.budget:
                record.finished = True
        record.save(self.state_path)
        final = self.out / "model.pt"
        shutil.copyfile(self._model_path(record), final.with_name("model.pt.partial"))
        final.with_name("model.pt.partial").replace(final)
        curve = self._curve()
        self._write_summary(record, curve)
        return ExploreResult(record, curve, final)

    def _start(self) -> ExploreRecord:
        """Step 0: the run's training database (the model's training and validation frames of
        ``data``) and the first point of the learning curve."""
        write_frames(self.train_db, self.initial, overwrite=True)
        self._extend_curve(0, self.potential, self.uncertainty, None, [], 0)
        record = ExploreRecord()  # its model: the run's --model
        self._save(record, 0, "start")
        return record

    def _current(self, record: ExploreRecord) -> tuple[Potential, Uncertainty]:
        path = self._model_path(record)
        if path == self.model_path:
            return self.potential, self.uncertainty  # loaded and fingerprinted once
        potential = load_potential(path)
        return potential, require_uncertainty(potential)

    def _pool(self, record: ExploreRecord, step: int) -> None:
        potential, uncertainty = self._current(record)
        directory = _step_dir(self.out, step)
        directory.mkdir(parents=True, exist_ok=True)
        s = self.settings
        pool = run_pool(
            potential, uncertainty, self.starts, s.md(step), s.pool_steps,
            s.every, s.tau, s.stop_uncertainty, checkpoint=directory / "pool-md.pt",
            progress=self.progress,
        )  # fmt: skip
        save_torch_file(pool.to_dict(), directory / "pool.pt")
        (directory / "pool-md.pt").unlink(missing_ok=True)
        self._save(record, step, "pool", {"candidates": len(pool.candidates)})

    def _load_pool(self, step: int) -> Pool:
        path = _step_dir(self.out, step) / "pool.pt"
        return Pool.from_dict(torch.load(path, weights_only=True))

    def _selected(self, record: ExploreRecord, step: int) -> None:
        potential, uncertainty = self._current(record)
        pool = self._load_pool(step)
        size = min(self.settings.per_step, self.settings.budget - record.labels_used)
        if not pool.candidates:
            raise InputError(
                f"{self.out}: the pool of step {step} kept no frame (every replica stopped "
                f"before its first frame at {self.settings.every} steps); start another run "
                "with a smaller --every or a larger --stop-uncertainty"
            )
        chosen = []
        if size > 0:
            selection = self._select(potential, uncertainty, pool, size, step)
            atoms = selection.atoms or [None] * len(selection.indices)
            for k, score, atom in zip(selection.indices, selection.scores, atoms, strict=True):
                c = pool.candidates[k]
                chosen.append({
                    "candidate": k, "request_id": LabelRequest.of(c.atoms, step).request_id,
                    "score": score, "score_atom": atom, "replica": c.replica,
                    "time_fs": c.time_fs, "total_u": c.total_u, "max_atomic_u": c.max_atomic_u,
                })  # fmt: skip
        write_json({"selected": chosen}, _step_dir(self.out, step) / "selected.json")
        self._save(record, step, "selected", {"selected": len(chosen)})

    def _select(
        self, potential: Potential, uncertainty: Uncertainty, pool: Pool, size: int, step: int
    ) -> Selection:
        """``size`` of the pool's candidates by the run's selection, on the current model's
        features: max-grade on the latent features of the atoms of the candidates and of the
        frames the current model trained on, the others on the structure features."""
        method, frames = self.settings.selection, [c.atoms for c in pool.candidates]
        if method == "max-grade":
            training = read_frames(self.train_db)
            training = [training[i] for i in self._split(len(training)).train]
            return select_max_grade(
                *latent_features(potential, frames), [len(a) for a in frames],
                *latent_features(potential, training), size,
            )  # fmt: skip
        features = structure_features(potential, uncertainty.features, frames)
        training = (
            structure_features(potential, uncertainty.features, read_frames(self.train_db))
            if method == "max-dist"
            else features[:0]
        )
        return select(
            method, features, uncertainty.structure, training, size, self.settings.seed + step
        )

    def _split(self, n_frames: int) -> Split:
        """The split of train.db's ``n_frames`` rows: the starting model's validation frames
        (stored after its training frames by :meth:`_start`) validate every step, every other
        frame trains."""
        val = np.arange(len(self.initial) - self.n_val, len(self.initial))
        return Split(np.setdiff1d(np.arange(n_frames), val), val, np.zeros(0, dtype=int))

    def _selection(self, step: int) -> list[dict]:
        path = _step_dir(self.out, step) / "selected.json"
        return read_json_record(path, "explore selection", keys=("selected",))["selected"]

    def _labelled(self, record: ExploreRecord, step: int) -> None:
        pool, chosen = self._load_pool(step), self._selection(step)
        labels = _step_dir(self.out, step) / "labels"
        labels.mkdir(exist_ok=True)
        requests = [LabelRequest.of(pool.candidates[c["candidate"]].atoms, step) for c in chosen]
        missing = [r for r in requests if not (labels / f"{r.request_id}.json").is_file()]
        done = len(requests) - len(missing)
        for request, result in self.labeller(self.spec, missing):
            _write_label(result, labels / f"{request.request_id}.json")
            done += 1
            self.after(f"label:{done}")
        record.labels_used += len(requests)
        self._save(record, step, "labelled", {"labels": len(requests)})

    def _appended(self, record: ExploreRecord, step: int) -> None:
        pool, chosen = self._load_pool(step), self._selection(step)
        labels = _step_dir(self.out, step) / "labels"
        new, failures = [], []
        for c in chosen:
            result = _read_label(labels / f"{c['request_id']}.json")
            if not result.ok:
                failures.append(
                    {"step": step, "request_id": c["request_id"], "error": result.error}
                )
                continue
            atoms = result.attach(pool.candidates[c["candidate"]].atoms)
            provenance = {
                "source": "explore", "explore_step": step, "replica": c["replica"],
                "time_fs": c["time_fs"], "label_id": c["request_id"],
                "level_of_theory": self.level, "total_u": c["total_u"],
                **({"score": c["score"]} if c["score"] is not None else {}),
                **({"score_atom": c["score_atom"]} if c.get("score_atom") is not None else {}),
            }  # fmt: skip
            atoms.info.update(provenance)
            new.append(atoms)
        with connect(self.train_db) as db:  # one transaction: all rows or none
            stored = {row.get("label_id") for row in db.select(source="explore")}
            for atoms in new:
                if atoms.info["label_id"] not in stored:
                    db.write(atoms, key_value_pairs=key_value_pairs(atoms.info))
        self.after("rows")  # stored, but not yet recorded as stored
        known = {(f["step"], f["request_id"]) for f in record.failures}
        record.failures += [f for f in failures if (f["step"], f["request_id"]) not in known]
        self._save(record, step, "appended", {"appended": len(new), "failed": len(failures)})

    def _retrained(self, record: ExploreRecord, step: int) -> None:
        """Train on every frame of train.db but the starting model's validation frames
        (:meth:`_split`), which validate every step: a frame that an earlier step trained on
        would make the warm-started model's early stopping and the uncertainty's calibration
        look better than they are."""
        directory = _step_dir(self.out, step)
        n_frames = len(read_frames(self.train_db))
        split = self._split(n_frames)
        train_from_database(
            self.train_db, len(split.train), self.n_val, self.config, directory / "model.pt",
            run_dir=directory / "train_run", progress=self.progress,
            init=self._model_path(record), split=split,
        )  # fmt: skip
        self._save(record, step, "retrained", {"frames": n_frames})

    def _uncertainty(self, record: ExploreRecord, step: int) -> None:
        directory = _step_dir(self.out, step)
        previous = self._current(record)[1]
        fit_model_uncertainty(
            directory / "model.pt", self.train_db, directory / "model_u.pt",
            kind=previous.features.kind, projections=previous.features.projections,
            seed=previous.features.seed, calibration=previous.calibration, alpha=previous.alpha,
        )  # fmt: skip
        potential = load_potential(directory / "model_u.pt")
        uncertainty = require_uncertainty(potential)
        labelled = [a for a in read_frames(self.train_db) if a.info.get("explore_step") == step]
        pool = self._load_pool(step)
        self._extend_curve(step, potential, uncertainty, pool, labelled, record.labels_used)
        record.model = str((directory / "model_u.pt").relative_to(self.out))
        self._save(record, step, "uncertainty")

    def _extend_curve(self, step, potential, uncertainty, pool, labelled, labels_used) -> None:
        reasons = {}
        for reason in pool.stopped_by if pool is not None else ():
            reasons[reason or "ran to the end"] = reasons.get(reason or "ran to the end", 0) + 1
        row = {
            "step": step,
            "labels": len(read_frames(self.train_db)),
            "labels_used": labels_used,
            "new_labels": len(labelled),
            "pool_frames": None if pool is None else len(pool.candidates),
            "pool_replicas_stopped_by": reasons,
            "test": test_set_scores(potential, uncertainty, self.test_sets),
        }
        if self.hook is not None:
            row["step_metrics"] = self.hook(
                StepContext(
                    step,
                    _step_dir(self.out, step),
                    potential,
                    uncertainty,
                    pool,
                    labelled,
                    self.train_db,
                )
            )
        rows = [r for r in self._curve() if r["step"] < step] + [row]
        write_learning_curve(rows, self.curve_path, self.out / "learning_curve.png")

    def _write_summary(self, record: ExploreRecord, curve: list[dict]) -> None:
        first, last = curve[0], curve[-1]
        lines = [
            "# stablemd explore",
            "",
            f"- oracle: {self.spec.describe()}; selection: {self.settings.selection}",
            f"- steps: {last['step']}; oracle calls: {record.labels_used} of "
            f"{self.settings.budget}; failed labels: {len(record.failures)}",
            f"- training + validation labels: {first['labels']} → {last['labels']}",
        ]
        for name in first["test"]:
            a, b = first["test"][name], last["test"][name]
            lines.append(
                f"- {name} ({a['frames']} frames): force RMSE "
                f"{1000 * a['force_rmse_eV_per_A']:.1f} → {1000 * b['force_rmse_eV_per_A']:.1f} "
                f"meV/Å, energy RMSE {1000 * a['energy_rmse_eV_per_atom']:.2f} → "
                f"{1000 * b['energy_rmse_eV_per_atom']:.2f} meV/atom, coverage per atom "
                f"{100 * b['coverage_forces']:.0f} % (nominal {100 * b['nominal_coverage']:.0f} %)"
            )
        for failure in record.failures:
            lines.append(f"- failed label, step {failure['step']}: {failure['error']}")
        lines += ["", "Files: model.pt, learning_curve.json, learning_curve.png, train.db"]
        with atomic_write(self.out / "summary.md") as tmp:
            tmp.write_text("\n".join(lines) + "\n")


#: What an explore run writes in its directory (``remove_run`` removes these and nothing else).
RUN_FILES = (
    "run.json", "state.json", "train.db", "learning_curve.json", "learning_curve.png",
    "model.pt", "summary.md",
)  # fmt: skip


def check_level_of_theory(
    frames: list[tuple[int, Atoms]], where: str, level: str, oracle: OracleSpec
) -> None:
    """Refuse the first of ``frames`` ((index in the file ``where``, frame)) that records no
    level of theory or another than ``level``, the one ``oracle`` labels with: its labels
    would join theirs, or be measured against them."""
    for index, atoms in frames:
        recorded = atoms.info.get("level_of_theory")
        if recorded is None:
            raise InputError(
                f"{where}: frame {index} records no level of theory, so it cannot be checked to "
                f"be of {level}, the level --oracle {oracle.name} labels with; if it is, import "
                f"the file with `stablemd data import FILE --out NEW.db --level-of-theory "
                f"'{level}'`"
            )
        if recorded != level:
            raise InputError(
                f"--oracle {oracle.name}: labels with {level}, but frame {index} of {where} was "
                f"labelled with {recorded}"
            )


def check_run_directory(out: Path, inputs: dict, overwrite: bool = False) -> None:
    """Refuse, naming the option and the file, an input (``inputs``: option → path or paths)
    that the run would write over in ``out`` (one of :data:`RUN_FILES` there, or a file of a
    step directory), and, unless ``overwrite``, a directory holding such files without the
    ``run.json`` of an explore run (someone else's ``train.db`` or ``model.pt``)."""
    given, out = Path(out), Path(out).resolve()
    for option, paths in inputs.items():
        for path in [paths] if isinstance(paths, str | Path) else paths:
            resolved = Path(path).resolve()
            if (
                resolved.parent == out
                and resolved.name in RUN_FILES
                or any(
                    parent.parent == out and parent.match("step-[0-9][0-9][0-9]")
                    for parent in resolved.parents
                )
            ):
                raise InputError(
                    f"{option} {path}: the explore run in {given} writes this file; "
                    "move the input or choose another --out"
                )
    if overwrite or (out / "run.json").is_file():
        return
    foreign = [name for name in RUN_FILES if (out / name).exists()]
    if foreign:
        raise InputError(
            f"--out {given}: holds {', '.join(foreign)} but no explore run (run.json); choose "
            "another --out or pass --overwrite"
        )


def remove_run(out: Path) -> None:
    """Remove an earlier explore run from ``out`` (its files and step directories; nothing
    else), so that a new one starts there."""
    out = Path(out)
    if not (out / "run.json").is_file():
        return
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for directory in out.glob("step-[0-9][0-9][0-9]"):
        shutil.rmtree(directory)


def _write_label(result: LabelResult, path: Path) -> None:
    write_json(
        {
            "energy": result.energy,
            "forces": None if result.forces is None else np.asarray(result.forces).tolist(),
            "stress": None if result.stress is None else np.asarray(result.stress).tolist(),
            "error": result.error,
        },
        path,
    )


def _read_label(path: Path) -> LabelResult:
    values = json.loads(path.read_text())
    array = lambda v: None if v is None else np.asarray(v, dtype=float)  # noqa: E731
    return LabelResult(values["energy"], array(values["forces"]), array(values["stress"]),
                       values["error"])  # fmt: skip
