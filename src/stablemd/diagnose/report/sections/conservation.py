"""The report's conservation checks (Bigi, Langer & Ceriotti 2025; docs/diagnostics.md), for
each kind of forces the model was trained to give: the Jacobian asymmetry λ and the work around
a closed loop (are the forces a gradient?), short NVE runs (is the energy conserved, does the
temperature drift?), per-element temperatures under a global thermostat (does the thermostat
hide heating?) and geometry optimisation (do FIRE and L-BFGS converge?).

A multiple-time-stepping run (direct forces inside, the conservative correction every
``mts`` steps) joins the MD checks of a model trained with both heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from matplotlib.figure import Figure as MatplotlibFigure

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.diagnose.conservation import (
    closed_loop_work,
    jacobian_asymmetry,
    rotation_deformation_loop,
)
from stablemd.diagnose.energy_drift import (
    SCORE_THRESHOLD,
    ElementTemperatures,
    EnergyDrift,
    NonFiniteRun,
    nve_energy_drift,
    thermostat_element_temperatures,
)
from stablemd.diagnose.relaxation import Relaxation, relaxation_convergence
from stablemd.diagnose.report.model import (
    STATUSES,
    Figure,
    Section,
    Status,
    Table,
    Verdict,
    status_above,
)
from stablemd.md.settings import MDSettings
from stablemd.models.potential import Potential
from stablemd.models.registry import trained_forces

#: λ above this is no rounding error: the forces are not a gradient (warn). Above the fail
#: level λ exceeds every direct-force model the paper measured (0.004–0.032 on water).
LAMBDA_WARN, LAMBDA_FAIL = 1e-6, 0.03
#: Closed-loop work (eV) above the warn level is no rounding error; above k_B T a molecule
#: can gain a thermal quantum per cycle (fail).
LOOP_WORK_WARN_EV = 1e-4
#: Kinetic-temperature drift in NVE, K/ps (the paper's direct-force PET heated ~7 K/ps), judged
#: only when it stands out of the replicas' scatter by more than SIGNIFICANCE standard errors.
TEMPERATURE_DRIFT_WARN, TEMPERATURE_DRIFT_FAIL = 1.0, 5.0
#: Relative deviation of an element's mean temperature from the thermostat's (the paper saw up
#: to 10 % under CSVR with direct forces), judged like the drift, but a warning at most: a
#: global thermostat rescales all velocities alike and cannot share energy between the modes of
#: a small molecule, so even conservative forces need not reach equipartition within the run
#: (a conservative PaiNN of ethanol, 8 replicas × 4 ps under CSVR: H 286, C 357, O 486 K;
#: under Langevin 311, 316, 321 K).
ELEMENT_T_WARN = 0.03
#: Difference of an element's mean temperature from the same model's −∂E/∂r run under CSVR from
#: the same starts, velocities and thermostat seed, relative to the target T; it takes the place
#: of the absolute check for the direct head and MTS of a model with both heads. Ethanol, 8 × 5
#: ps (docs/nc_results.md §4): conservative models read within 4 % of each other, MTS (M = 8)
#: 8–12 % off (warn), the direct heads 55–60 % (fail).
ELEMENT_T_REL_WARN, ELEMENT_T_REL_FAIL = 0.05, 0.15
SIGNIFICANCE = 3.0
#: The outer step (fs) of the MTS check unless told M. The paper's M = 8 at a 0.5 fs inner step
#: (4 fs) resonates with X–H stretches: a `both` PaiNN of ethanol heated by a median +34 K/ps
#: in NVE and lost 10 of 16 replicas at 500 K, where M = 4 (2 fs) conserved energy within
#: errors (+0.7 ± 1.9 K/ps; docs/nc_results.md §3).
MTS_OUTER_STEP_FS = 2.0
#: Frames of the MD checks are recorded about this often (fs).
RECORD_EVERY_FS = 5.0


@dataclass(frozen=True)
class ConservationSettings:
    """Sizes of the conservation checks: MD ``replicas`` × ``time_ps`` at ``temperature_K`` with
    ``timestep_fs`` (NVE, and CSVR with ``tau_fs``; the first ``discard_ps`` of the CSVR runs
    left out), λ on up to ``lambda_structures`` structures, a loop of ``loop_points``, geometry
    optimisation to ``fmax`` eV/Å within ``max_steps``; ``mts`` inner steps for the MTS run
    (default: as many as fill an outer step of ``MTS_OUTER_STEP_FS``)."""

    replicas: int = 8
    time_ps: float = 2.0
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    tau_fs: float = 100.0
    discard_ps: float = 0.5
    lambda_structures: int = 8
    loop_points: int = 1000
    fmax: float = 1e-4
    max_steps: int = 1000
    mts: int | None = None
    seed: int = 0

    @property
    def inner_steps(self) -> int:
        """M of the MTS run."""
        return self.mts or max(1, round(MTS_OUTER_STEP_FS / self.timestep_fs))


def force_kinds(potential: Potential) -> list[str]:
    """The forces the model was trained to give: its direct head, −∂E/∂r, or both."""
    trained = trained_forces(potential)
    return {"direct": ["direct"], "both": ["conservative", "direct"]}.get(trained, ["conservative"])


def md_forces(potential: Potential) -> str:
    """The forces MD of the model uses unless told otherwise: its direct head for a model
    trained with direct forces only, −∂E/∂r otherwise."""
    return "direct" if trained_forces(potential) == "direct" else "conservative"


def _significant_status(value: float, error: float, warn: float, fail: float) -> Status:
    """:func:`status_above` of |value|, but pass while |value| is within SIGNIFICANCE × error."""
    if abs(value) <= SIGNIFICANCE * error:
        return "pass"
    return status_above(abs(value), warn, fail)


def _standard_error(per_replica: np.ndarray) -> np.ndarray:
    """Standard error of the mean over replicas (axis 0; 0 for one replica)."""
    n = len(per_replica)
    return per_replica.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(per_replica.shape[1:])


# --- static checks: λ, loop work, geometry optimisation ----------------------------------------


def _lambda_plot(results: dict) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    for kind, asym in results.items():
        floor = np.maximum(asym.pair_lambda, 1e-18)  # conservative pairs sit at rounding level
        ax.scatter(asym.pair_distance, floor, s=8, alpha=0.6, label=f"{kind} forces")
    ax.axhline(LAMBDA_FAIL, color="tab:red", ls="--", lw=1, label="fail threshold")
    ax.set_yscale("log")
    ax.set_xlabel("pair distance r_ij (Å)")
    ax.set_ylabel("λ_ij")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return fig


def _relaxation_plot(runs: dict[str, dict[str, Relaxation]], fmax: float) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    for kind, by_optimizer in runs.items():
        for name, relaxation in by_optimizer.items():
            ax.plot(relaxation.fmax_trace_eV_per_A, lw=1.2, label=f"{kind}, {name}")
    ax.axhline(fmax, color="black", ls="--", lw=1, label="target fmax")
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("largest force (eV/Å)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return fig


def _failed(check: str, exc: InputError) -> Verdict:
    """The verdict of a check the model's numbers made impossible (non-finite forces)."""
    return Verdict(check, None, "finite forces", "fail", note=str(exc))


def _lambda_check(potential, structures, kind, settings) -> tuple[Verdict, object | None]:
    check = f"Jacobian asymmetry λ, {kind} forces"
    try:
        asym = jacobian_asymmetry(potential, list(structures)[: settings.lambda_structures], kind)
    except InputError as exc:
        return _failed(check, exc), None
    return Verdict(
        check, asym.overall_lambda,
        f"warn > {LAMBDA_WARN:g} (not a gradient), fail > {LAMBDA_FAIL:g}",
        status_above(asym.overall_lambda, LAMBDA_WARN, LAMBDA_FAIL),
        note=f"{len(asym.structure_lambda)} structures",
    ), asym  # fmt: skip


def _loop_check(potential, relaxed, kind, settings) -> tuple[Verdict, object | None]:
    check = f"work around a closed loop, {kind} forces"
    kt = KB_EV_PER_K * settings.temperature_K
    try:
        path = rotation_deformation_loop(relaxed, settings.loop_points)
        loop = closed_loop_work(potential, path, kind)
    except InputError as exc:
        return _failed(check, exc), None
    return Verdict(
        check, abs(loop.work_eV), f"warn > {LOOP_WORK_WARN_EV:g} eV, fail > k_B T = {kt:.3g} eV",
        status_above(abs(loop.work_eV), LOOP_WORK_WARN_EV, kt), unit="eV",
        note=f"{settings.loop_points} points, quadrature error {loop.quadrature_error_eV:.2g} eV",
    ), loop  # fmt: skip


def _relaxation_check(potential, relaxed, kind, settings) -> tuple[Verdict, dict | None]:
    """Both optimisers converge: pass; one: warn; none: fail for direct forces, warn for
    −∂E/∂r (a gradient that an optimiser cannot follow to 1e-4 eV/Å in time points to a rough
    or flat energy, or a large system, not to non-conservative forces)."""
    check = f"geometry optimisation converges, {kind} forces"
    try:
        relax = relaxation_convergence(
            potential, relaxed, kind, fmax=settings.fmax, max_steps=settings.max_steps
        )
    except InputError as exc:
        return _failed(check, exc), None
    converged = [name for name, r in relax.items() if r.converged]
    worst = "warn" if kind == "conservative" else "fail"
    status = "pass" if len(converged) == len(relax) else ("warn" if converged else worst)
    return Verdict(
        check, float(len(converged)),
        f"fmax {settings.fmax:g} eV/Å within {settings.max_steps} steps; warn: one optimiser "
        f"fails, {worst}: all fail", status, unit=f"of {len(relax)}",
        note=", ".join(
            f"{n}: {r.steps} steps to {r.final_fmax_eV_per_A:.2g} eV/Å" for n, r in relax.items()
        ),
    ), relax  # fmt: skip


def force_field_section(
    potential: Potential,
    structures: Sequence[Atoms],
    relaxed: Atoms,
    settings: ConservationSettings,
) -> Section:
    """λ on ``structures`` (at most ``settings.lambda_structures``), the closed-loop work around
    ``relaxed`` turned once and deformed, and its geometry optimisation, per force kind; a check
    that non-finite forces made impossible fails."""
    verdicts, rows, data = [], [], {}
    asymmetries, relaxations = {}, {}
    elements = [chemical_symbols[z] for z in np.unique(relaxed.numbers)]
    for kind in force_kinds(potential):
        lambda_verdict, asym = _lambda_check(potential, structures, kind, settings)
        loop_verdict, loop = _loop_check(potential, relaxed, kind, settings)
        relax_verdict, relax = _relaxation_check(potential, relaxed, kind, settings)
        verdicts += [lambda_verdict, loop_verdict, relax_verdict]
        numbers = {}
        if asym is not None:
            asymmetries[kind] = asym
            per_element = {
                chemical_symbols[z]: float(asym.atom_lambda[asym.atom_numbers == z].mean())
                for z in np.unique(asym.atom_numbers)
            }
            numbers["lambda"] = asym.overall_lambda
            numbers["lambda_per_element"] = per_element
            numbers["lambda_per_structure"] = asym.structure_lambda.tolist()
        if loop is not None:
            numbers.update(loop_work_eV=loop.work_eV, loop_path_length_A=loop.path_length_A,
                           loop_quadrature_error_eV=loop.quadrature_error_eV)  # fmt: skip
        if relax is not None:
            relaxations[kind] = relax
            numbers["relaxation"] = {
                n: {"converged": r.converged, "steps": r.steps,
                    "final_fmax_eV_per_A": r.final_fmax_eV_per_A, "failure": r.failure}
                for n, r in relax.items()
            }  # fmt: skip
        data[kind] = numbers
        if asym is not None and loop is not None:
            rows.append([kind, asym.overall_lambda, *map(per_element.get, elements), loop.work_eV])
    return Section(
        title="Are the forces conservative?",
        summary=(
            "λ = ‖J_anti‖/‖J‖ of the force Jacobian J = ∂f/∂r is zero for forces that are the "
            "gradient of an energy; the work around a closed path (the molecule turned once "
            "about an axis and deformed on the way) is zero for them too. Non-conservative "
            "forces heat or cool MD and can keep geometry optimisers from converging."
        ),
        verdicts=verdicts,
        figures=[
            Figure(
                _lambda_plot(asymmetries),
                "λ_ij of each pair of atoms against its distance.",
                "Jacobian asymmetry per pair",
            ),
            Figure(
                _relaxation_plot(relaxations, settings.fmax),
                "Largest force on an atom along FIRE and L-BFGS optimisations.",
                "Geometry optimisation convergence",
            ),
        ],  # fmt: skip
        tables=[
            Table(
                ["forces", "λ", *(f"λ {e}" for e in elements), "loop work (eV)"],
                rows,
                caption="Jacobian asymmetry overall and per element, and closed-loop work",
            )
        ],  # fmt: skip
        data=data,
    )


# --- MD checks: NVE drift, per-element temperatures under CSVR ---------------------------------


@dataclass
class SchemeRun:
    """One force scheme's MD checks: its NVE drift and CSVR element temperatures, each or why
    it stopped (a replica turned non-finite)."""

    name: str
    drift: EnergyDrift | None = None
    temperatures: ElementTemperatures | None = None
    nve_failure: str | None = None
    csvr_failure: str | None = None


def md_schemes(potential: Potential, mts: int) -> dict:
    """The MD force schemes to check, by name: each trained kind of forces, and multiple time
    stepping with ``mts`` inner steps for a model trained with both heads."""
    schemes = {kind: (kind, None) for kind in force_kinds(potential)}
    if trained_forces(potential) == "both":
        schemes[f"MTS (M = {mts})"] = (None, mts)
    return schemes


def run_scheme(
    potential: Potential,
    name: str,
    forces: str | None,
    mts: int | None,
    starts: Sequence[Atoms],
    settings: ConservationSettings,
) -> SchemeRun:
    """NVE and CSVR runs of ``settings.replicas`` × ``settings.time_ps`` from ``starts`` with the
    given forces (or MTS); a run that turns non-finite is recorded as the scheme's failure."""
    md = MDSettings(
        replicas=settings.replicas, temperature_K=settings.temperature_K,
        timestep_fs=settings.timestep_fs, thermostat="csvr", tau_fs=settings.tau_fs,
        seed=settings.seed, forces=forces, mts=mts,
    )  # fmt: skip
    term = md.force_term(potential)
    n_steps = max(3, round(1000 * settings.time_ps / md.step_fs))
    every = max(1, round(RECORD_EVERY_FS / md.step_fs))
    common = {"replicas": md.replicas, "temperature_K": md.temperature_K, "seed": md.seed}
    nve = md.model_copy(update={"thermostat": "nve"}).integrator()
    result = SchemeRun(name)
    try:
        result.drift = nve_energy_drift(
            term, starts, md.step_fs, n_steps, every, **common, integrator=nve
        )
    except NonFiniteRun as exc:  # the check failed; say how
        result.nve_failure = str(exc)
    try:
        result.temperatures = thermostat_element_temperatures(
            term, starts, md.integrator(), n_steps, every, 1000 * settings.discard_ps, **common
        )
    except NonFiniteRun as exc:
        result.csvr_failure = str(exc)
    return result


def _drift_verdicts(run: SchemeRun) -> list[Verdict]:
    if run.drift is None:
        return [Verdict(f"NVE energy conservation, {run.name}", None, "finite MD", "fail",
                        note=run.nve_failure or "")]  # fmt: skip
    drift = run.drift
    blown = np.flatnonzero(drift.non_finite)
    if blown.size:  # the fits used each replica's finite part only: no pass for what blew up
        return [Verdict(
            f"NVE energy conservation, {run.name}", None, "finite MD", "fail",
            note=f"replica(s) {', '.join(map(str, blown))} turned non-finite after "
            f"{', '.join(f'{drift.duration_ps[k]:.3g}' for k in blown)} ps",
        )]  # fmt: skip
    t_drift = drift.mean_temperature_drift_K_per_ps
    t_error = _standard_error(drift.temperature_drift_K_per_ps)
    return [
        Verdict(
            f"NVE drift score, {run.name}", drift.mean_score,
            f"|slope × duration| / std(E_kin); fail > {SCORE_THRESHOLD:g}",
            "pass" if drift.passed else "fail",
            note=f"slope {1000 * drift.mean_slope_eV_per_atom_per_ps:+.3g} meV/atom/ps",
        ),
        Verdict(
            f"NVE temperature drift, {run.name}", t_drift,
            f"warn |drift| > {TEMPERATURE_DRIFT_WARN:g}, fail > {TEMPERATURE_DRIFT_FAIL:g} K/ps, "
            f"when beyond {SIGNIFICANCE:g} standard errors",
            _significant_status(t_drift, t_error, TEMPERATURE_DRIFT_WARN, TEMPERATURE_DRIFT_FAIL),
            unit="K/ps", note=f"± {t_error:.2g} K/ps over {len(drift.score)} replicas",
        ),
    ]  # fmt: skip


def _worst_element(per_replica: np.ndarray, warn: float, fail: float) -> tuple[int, Status]:
    """The column of ``per_replica`` [n_replicas, n_elements] whose mean over replicas judges
    worst by :func:`_significant_status` (the largest |mean| among equals), and its status."""
    mean, error = per_replica.mean(0), _standard_error(per_replica)
    statuses = [_significant_status(m, e, warn, fail) for m, e in zip(mean, error, strict=True)]
    worst = max(range(len(mean)), key=lambda k: (STATUSES.index(statuses[k]), abs(mean[k])))
    return worst, statuses[worst]


def _element_verdict(run: SchemeRun, target_K: float, reference: SchemeRun | None) -> Verdict:
    """Each element's mean temperature under CSVR against the same model's −∂E/∂r run from the
    same starts (``reference``; replica k against replica k, warn and fail), or, without a
    finite reference, against the thermostat (a warning at most). The value is the worst
    element's difference, % of ``target_K``."""
    if run.temperatures is None:
        return Verdict(f"element temperatures under CSVR, {run.name}", None, "finite MD",
                       "fail", note=run.csvr_failure or "")  # fmt: skip
    temps = run.temperatures
    beyond = f"when beyond {SIGNIFICANCE:g} standard errors"
    if reference is not None and reference.temperatures is not None:
        per_replica = (
            temps.mean_per_replica_K - reference.temperatures.mean_per_replica_K
        ) / target_K
        k, status = _worst_element(per_replica, ELEMENT_T_REL_WARN, ELEMENT_T_REL_FAIL)
        check = f"element temperatures under CSVR against −∂E/∂r, {run.name}"
        threshold = (
            f"warn > {100 * ELEMENT_T_REL_WARN:g} %, fail > {100 * ELEMENT_T_REL_FAIL:g} "
            f"% of {target_K:g} K off −∂E/∂r's, {beyond} of the difference"
        )
        reading = f"{temps.mean_K[k]:.1f} K against {reference.temperatures.mean_K[k]:.1f} K"
    else:
        per_replica = temps.mean_per_replica_K / target_K - 1.0
        k, status = _worst_element(per_replica, ELEMENT_T_WARN, math.inf)
        check = f"element temperatures under CSVR, {run.name}"
        threshold = (
            f"warn > {100 * ELEMENT_T_WARN:g} % off {target_K:g} K, {beyond}; never "
            "fails (a global thermostat need not equipartition a small molecule)"
        )
        reading = f"{temps.mean_K[k]:.1f} K"
        if reference is not None:
            threshold += "; the −∂E/∂r run to compare with turned non-finite"
    difference, error = per_replica[:, k].mean(), _standard_error(per_replica)[k]
    return Verdict(
        check, 100 * float(difference), threshold, status, unit="%",
        note=f"worst element {chemical_symbols[int(temps.elements[k])]}: {reading}, "
        f"{target_K * difference:+.1f} ± {target_K * error:.1f} K",
    )  # fmt: skip


def _temperature_plot(runs: list[SchemeRun], target_K: float) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    for run in runs:
        if run.drift is not None:
            mean = np.nanmean(run.drift.temperature_K, axis=1)
            ax.plot(run.drift.time_fs / 1000, mean, lw=1.2, label=run.name)
    ax.axhline(target_K, color="black", ls="--", lw=1, label="start temperature")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("kinetic temperature (K)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return fig


def _element_plot(runs: list[SchemeRun], target_K: float) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    done = [r for r in runs if r.temperatures is not None]
    width = 0.8 / max(1, len(done))
    for k, run in enumerate(done):
        temps = run.temperatures
        x = np.arange(len(temps.elements)) + (k - (len(done) - 1) / 2) * width
        ax.bar(x, temps.mean_K, width, yerr=_standard_error(temps.mean_per_replica_K),
               capsize=3, label=run.name)  # fmt: skip
        ax.set_xticks(np.arange(len(temps.elements)),
                      [chemical_symbols[int(z)] for z in temps.elements])  # fmt: skip
    ax.axhline(target_K, color="black", ls="--", lw=1, label="thermostat")
    low = min([target_K, *(r.temperatures.mean_K.min() for r in done)])
    ax.set_ylim(0.8 * low, None)
    ax.set_ylabel("mean temperature (K)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return fig


def md_conservation_section(
    potential: Potential, starts: Sequence[Atoms], settings: ConservationSettings
) -> Section:
    """NVE energy and temperature drift and per-element temperatures under CSVR for every
    scheme of :func:`md_schemes`."""
    runs = [
        run_scheme(potential, name, forces, mts, starts, settings)
        for name, (forces, mts) in md_schemes(potential, settings.inner_steps).items()
    ]
    conservative = next((run for run in runs if run.name == "conservative"), None)
    verdicts = []
    for run in runs:
        reference = None if run is conservative else conservative
        verdicts += [
            *_drift_verdicts(run),
            _element_verdict(run, settings.temperature_K, reference),
        ]
    data = {
        run.name: {
            "nve_failure": run.nve_failure,
            "csvr_failure": run.csvr_failure,
            "drift": None if run.drift is None else {
                "mean_score": run.drift.mean_score,
                "score": run.drift.score.tolist(),
                "slope_eV_per_atom_per_ps": run.drift.slope_eV_per_atom_per_ps.tolist(),
                "temperature_drift_K_per_ps": run.drift.temperature_drift_K_per_ps.tolist(),
            },
            "element_temperatures_K": None if run.temperatures is None else {
                chemical_symbols[int(z)]: float(t)
                for z, t in zip(run.temperatures.elements, run.temperatures.mean_K, strict=True)
            },
            "element_temperatures_per_replica_K": None if run.temperatures is None else {
                chemical_symbols[int(z)]: run.temperatures.mean_per_replica_K[:, k].tolist()
                for k, z in enumerate(run.temperatures.elements)
            },
        }
        for run in runs
    }  # fmt: skip
    return Section(
        title="Energy conservation in MD",
        summary=(
            f"{settings.replicas} replicas from the start structures at "
            f"{settings.temperature_K:g} K, {settings.time_ps:g} ps each, per force scheme: "
            "without a thermostat (NVE) the conserved energy must not drift and the temperature "
            "must not run away; under a global CSVR thermostat (τ = "
            f"{settings.tau_fs:g} fs) non-conservative forces heat some elements while the "
            "total temperature looks right. CSVR does not equipartition a small molecule even "
            "with −∂E/∂r, so a direct head and MTS are judged against the same model's −∂E/∂r "
            "run from the same starts, and −∂E/∂r itself warns at most."
        ),
        verdicts=verdicts,
        figures=[
            Figure(
                _temperature_plot(runs, settings.temperature_K),
                "Kinetic temperature in NVE, mean over replicas.",
                "NVE temperature",
            ),
            Figure(
                _element_plot(runs, settings.temperature_K),
                f"Mean temperature of each element under CSVR after {settings.discard_ps:g} "
                "ps, with standard errors over replicas.",
                "Element temperatures",
            ),
        ],  # fmt: skip
        data=data,
    )
