"""``stablemd diagnose`` as a library call: check every input and the output directory, run the
diagnostics, build one :class:`~stablemd.diagnose.report.model.Section` each, write the report.

Adding a diagnostic to the report is one function that returns a ``Section`` (put it in
``report/sections/``) and one line in :func:`build_sections` that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from pydantic import Field, model_validator

from stablemd.analysis.structure import reference_observables
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_directory
from stablemd.data.database import read_frames
from stablemd.data.formats import read_positions
from stablemd.diagnose.early_warning.settings import model_early_warning
from stablemd.diagnose.held_out import HeldOutErrors, held_out_errors
from stablemd.diagnose.report.model import Section
from stablemd.diagnose.report.sections.conservation import (
    ConservationSettings,
    force_field_section,
    md_conservation_section,
    md_forces,
)
from stablemd.diagnose.report.sections.early_warning import early_warning_section
from stablemd.diagnose.report.sections.held_out import (
    FORCE_MAE_FAIL_EV_PER_A,
    FORCE_MAE_WARN_EV_PER_A,
    held_out_section,
)
from stablemd.diagnose.report.sections.stability import stability_section
from stablemd.diagnose.report.write import REPORT_FILES, ReportPaths, write_report
from stablemd.diagnose.stability.benchmark import (
    H_R_MAX_A,
    StabilitySettings,
    check_stability_run,
    run_stability,
    stability_run_options,
)
from stablemd.models.potential import Potential
from stablemd.models.registry import check_elements, load_potential, model_fingerprint
from stablemd.systems.system import System

#: The stability run's directory inside --out (it resumes after a kill).
STABILITY_DIR = "stability"
#: The files a stability run keeps in its directory (what --overwrite may remove).
STABILITY_FILES = ("checkpoint.pt", "settings.json", "result.json")


class DiagnoseSettings(StabilitySettings):
    """The stability run (the benchmark's settings, shorter and with fewer replicas so that the
    default diagnosis takes minutes on two cores) and the thresholds of the verdicts (eV/Å)."""

    replicas: int = Field(16, ge=1, description="replicas of the stability run")
    time_ps: float = Field(2.0, gt=0, description="simulated time per replica (ps)")
    force_mae_warn: float = Field(
        FORCE_MAE_WARN_EV_PER_A, gt=0, description="held-out force MAE (eV/Å) above which: warn"
    )
    force_mae_fail: float = Field(
        FORCE_MAE_FAIL_EV_PER_A, gt=0, description="held-out force MAE (eV/Å) above which: fail"
    )
    conservation_replicas: int = Field(8, ge=2, description="replicas of each conservation run")
    conservation_time_ps: float = Field(
        2.0, ge=0.05, description="length of each conservation run (ps)"
    )
    conservation_temperature_K: float = Field(
        300.0, gt=0, description="start and bath temperature of the conservation runs"
    )
    include_training: bool = Field(False, description="count training frames in the errors")
    batch_size: int = Field(32, ge=1, description="frames per forward pass of the errors")

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> DiagnoseSettings:
        if self.force_mae_warn > self.force_mae_fail:
            raise ValueError(
                f"--force-mae-warn {self.force_mae_warn:g} is above --force-mae-fail "
                f"{self.force_mae_fail:g}; the warning threshold must not exceed the failure one"
            )
        return self

    def conservation(self) -> ConservationSettings:
        """The sizes of the conservation checks (MTS with this run's ``mts``, by default M
        inner steps filling an outer step of 2 fs)."""
        return ConservationSettings(
            replicas=self.conservation_replicas, time_ps=self.conservation_time_ps,
            temperature_K=self.conservation_temperature_K, timestep_fs=self.timestep_fs,
            discard_ps=min(0.5, self.conservation_time_ps / 4),
            tau_fs=self.tau_fs, mts=self.mts, seed=self.seed,
        )  # fmt: skip

    def stability(self) -> StabilitySettings:
        """The stability benchmark's part of these settings."""
        return StabilitySettings(**self.model_dump(include=set(StabilitySettings.model_fields)))


@dataclass
class DiagnoseInputs:
    """Everything the diagnostics read, loaded and checked: the model (and its file), the
    system, the start structures (and where they came from), the labelled data (optional)."""

    model_path: Path
    potential: Potential
    system: System
    starts: list[Atoms]
    starts_path: Path | None = None
    data_path: Path | None = None
    data_frames: list[Atoms] | None = None

    @property
    def starts_name(self) -> str:
        """Where the start structures came from, for people."""
        return "the relaxed structure" if self.starts_path is None else str(self.starts_path)


@dataclass
class DiagnoseResult:
    """The sections of the report and where it was written."""

    sections: list[Section]
    paths: ReportPaths
    stability_dir: Path


def load_inputs(
    model: Path,
    system: System,
    settings: DiagnoseSettings,
    data: Path | None = None,
    starts: Path | None = None,
) -> DiagnoseInputs:
    """Load and check the inputs: a model file, start frames of ``system`` (put in its order)
    with elements the model knows, labelled frames (any structures: the held-out errors check
    their elements), and the force scheme of ``settings`` (``forces``, ``mts``) possible for
    the model; raises InputError naming the file."""
    potential = load_potential(model)
    start_frames = [system.atoms]
    if starts is not None:
        start_frames, _ = system.align(read_positions(starts), str(starts))
    check_elements(potential, start_frames, str(model), str(starts or f"--system {system.name}"))
    settings.stability().force_term(potential, str(model))  # --mts, --forces: refused up front
    data_frames = read_frames(data) if data is not None else None
    return DiagnoseInputs(model, potential, system, start_frames, starts, data, data_frames)


def reference_h_r(frames: list[Atoms] | None, system: System) -> np.ndarray | None:
    """h(r) of labelled frames on the benchmark's grid, the reference of the stability
    section; None without frames or when any frame is not of the system's composition (the
    held-out errors do not need it to be)."""
    expected = np.sort(system.atoms.numbers)
    if not frames or any(
        len(a) != len(expected) or not np.array_equal(np.sort(a.numbers), expected) for a in frames
    ):
        return None
    # h(r) counts every pair alike, so atoms may come in any order: sort them to stack frames
    ordered = [a[np.argsort(a.numbers, kind="stable")] for a in frames]
    return reference_observables(ordered, r_max=H_R_MAX_A).h_r.numpy()


def check_report_directory(
    out: Path,
    inputs: DiagnoseInputs,
    settings: DiagnoseSettings,
    overwrite: bool,
    run_dir: Path | None = None,
) -> bool:
    """Check ``out`` before any work, writing nothing. Refused without ``overwrite``: a
    directory holding a report, files that are not a diagnosis, or a stability run of other
    options (a directory holding an unfinished run of the same options is resumed). Returns
    whether the stability run kept there must be removed first (``overwrite`` with other
    options). ``run_dir`` is where the stability run is kept (default ``out/stability``)."""
    check_output_directory(
        out, "--out", inputs=[inputs.model_path, inputs.data_path, inputs.starts_path]
    )
    if not out.is_dir():
        return False
    report = [name for name in REPORT_FILES if (out / name).exists()]
    if report and not overwrite:
        raise InputError(
            f"--out {out}: already holds a report ({report[0]}); pass --overwrite to replace it"
        )
    ours = {*REPORT_FILES, STABILITY_DIR}
    others = sorted(
        p.name for p in out.iterdir() if p.name not in ours and not p.name.endswith(".partial")
    )
    if others and not overwrite:
        raise InputError(
            f"--out {out}: exists and holds files of something else ({others[0]}); choose "
            "another --out or pass --overwrite"
        )
    run_dir = run_dir or out / STABILITY_DIR
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {out}: {run_dir} is a file, not a stability run directory")
    stability = settings.stability()
    options = stability_run_options(
        model_fingerprint(inputs.potential), inputs.system, inputs.starts, stability, None,
        model_early_warning(inputs.potential, stability),
    )  # fmt: skip
    try:
        check_stability_run(options, run_dir)
    except InputError as exc:
        if not overwrite:
            raise InputError(f"{exc}; or pass --overwrite to run it again") from None
        return True
    return False


def remove_stability_run(run_dir: Path) -> None:
    """Remove the files of a stability run (and their partial siblings) from ``run_dir``,
    nothing else."""
    for name in STABILITY_FILES:
        for path in (run_dir / name, run_dir / f"{name}.partial"):
            path.unlink(missing_ok=True)


def build_sections(
    inputs: DiagnoseInputs,
    settings: DiagnoseSettings,
    stability_dir: Path,
    errors: HeldOutErrors | None,
    progress: bool = True,
) -> list[Section]:
    """Run the diagnostics and return their sections, in the report's order. A new diagnostic
    is one more line here calling a function that returns its ``Section``. The stability run
    is kept in (and resumed or read back from) ``stability_dir``."""
    sections = []
    if errors is not None:
        name = inputs.data_path.name
        sections.append(
            held_out_section(
                errors,
                name,
                settings.force_mae_warn,
                settings.force_mae_fail,
                md_forces(inputs.potential),
            )  # fmt: skip
        )
    reference = reference_h_r(inputs.data_frames, inputs.system)
    # λ on frames of the system (any --data frame of its composition, training ones included)
    structures = inputs.data_frames if reference is not None else inputs.starts
    conservation = settings.conservation()
    sections.append(
        force_field_section(inputs.potential, structures, inputs.system.atoms, conservation)
    )
    sections.append(md_conservation_section(inputs.potential, inputs.starts, conservation))
    stability = settings.stability()
    result = run_stability(
        inputs.potential, inputs.system, inputs.starts, stability, stability_dir,
        progress=progress,
        label=f"{stability.replicas} × {inputs.system.name} at {stability.temperature_K:g} K",
    )  # fmt: skip
    sections.append(
        stability_section(result, stability, inputs.system.name, inputs.starts_name, reference)
    )
    warning = early_warning_section(result, inputs.model_path.name)
    if warning is not None:  # a model that carries a latent domain
        sections.append(warning)
    return sections


def run_diagnosis(
    model: Path,
    system: System,
    out: Path,
    settings: DiagnoseSettings | None = None,
    data: Path | None = None,
    starts: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stability_dir: Path | None = None,
) -> DiagnoseResult:
    """Diagnose the model at ``model`` on ``system``; write ``out/report.html`` and
    ``out/report.json``.

    Held-out errors (with ``data``, an ASE database of labelled frames: the frames the model was
    not trained on) and a short stability run (from ``starts``, default the relaxed structure,
    kept in ``out/stability`` or ``stability_dir``, so a killed diagnosis resumes, and a
    finished run of the same settings there is read back, not simulated again). Every input and
    the output directory (:func:`check_report_directory`) are checked, and the held-out errors
    computed, before anything is written.
    """
    settings = settings or DiagnoseSettings()
    inputs = load_inputs(model, system, settings, data, starts)
    run_dir = stability_dir or out / STABILITY_DIR
    clear = check_report_directory(out, inputs, settings, overwrite, run_dir)
    errors = None
    if data is not None:
        errors = held_out_errors(
            inputs.potential, data, settings.include_training, settings.batch_size, str(model)
        )
    if overwrite:  # an earlier report must not stand beside a run that is not its own
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
    if clear:
        remove_stability_run(run_dir)
    sections = build_sections(inputs, settings, run_dir, errors, progress)
    meta = {
        "model": inputs.model_path.name,
        "model_path": str(inputs.model_path),
        "model_fingerprint": model_fingerprint(inputs.potential)[:16],
        "system": system.name,
        "data": None if data is None else str(data),
        "starts": inputs.starts_name,
        "settings": settings.model_dump(),
    }
    title = f"stablemd diagnosis: {inputs.model_path.name} on {system.name}"
    paths = write_report(sections, out, title, meta)
    return DiagnoseResult(sections, paths, run_dir)
