"""Plots of a :class:`~stablemd.diagnose.trajectory.analysis.TrajectoryAnalysis` (PNG, matplotlib's
object interface with the Agg canvas, as the stability report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from stablemd.analysis.ramachandran import ramachandran_plot
from stablemd.diagnose.stability.report import DPI, MODEL_COLOURS
from stablemd.diagnose.trajectory.analysis import TrajectoryAnalysis

#: Every file :func:`write_plots` may write (an analysis writes those its trajectory allows).
PLOT_NAMES = (
    "h_r.png", "rdf.png", "bonds.png", "vacf.png", "msd.png", "energies.png", "ramachandran.png",
)  # fmt: skip
#: Replicas named in the legend of the energy plot; beyond this they are only coloured.
MAX_LEGEND_REPLICAS = 8
_SERIES_LABELS = {
    "temperature": "Kinetic temperature (K)",
    "potential_energy": "Potential energy (eV)",
    "conserved_energy": "Conserved energy − start (eV)",
}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _colour(k: int) -> str:
    return MODEL_COLOURS[k % len(MODEL_COLOURS)]


def _title(analysis: TrajectoryAnalysis) -> str:
    path = Path(analysis.trajectory)
    name = analysis.system or f"{path.parent.name}/{path.name}"
    return f"{name}: {analysis.n_replicas} replicas, {analysis.frames_analysed} frames"


def _visible_range(x: np.ndarray, curves, fraction: float = 1e-3) -> tuple[float, float]:
    """The x range where any curve exceeds ``fraction`` of the largest value, padded a little."""
    stacked = np.vstack(list(curves))
    above = np.nonzero(stacked.max(0) > fraction * stacked.max())[0]
    if len(above) == 0:
        return float(x[0]), float(x[-1])
    lo, hi = x[above[0]], x[above[-1]]
    pad = 0.05 * (hi - lo) + (x[1] - x[0])
    return float(max(x[0], lo - pad)), float(min(x[-1], hi + pad))


def plot_h_r(analysis: TrajectoryAnalysis, path: Path) -> Path:
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    ax.plot(analysis.r_A, analysis.h_r_per_A, color="black", lw=1.5)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("h(r) (1/Å)")
    ax.set_xlim(analysis.r_A[0], analysis.r_A[-1])
    ax.grid(alpha=0.3)
    ax.set_title(f"{_title(analysis)}\ndistribution of all interatomic distances")
    return _save(fig, path)


def plot_rdf(analysis: TrajectoryAnalysis, path: Path) -> Path:
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for k, (pair, g) in enumerate(analysis.rdf.items()):
        ax.plot(analysis.rdf_r_A, g, color=_colour(k), lw=1.5, label=pair)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_xlim(analysis.rdf_r_A[0], analysis.rdf_r_A[-1])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(f"{_title(analysis)}\nelement-resolved radial distribution functions")
    return _save(fig, path)


def plot_bonds(analysis: TrajectoryAnalysis, path: Path) -> Path:
    """Bond-length (left) and bond-angle (right) distributions, one line per type."""
    fig = Figure(figsize=(11.0, 4.2))
    lengths, angles = fig.subplots(1, 2)
    panels = (
        (lengths, analysis.bond_r_A, analysis.bond_length_density_per_A,
         analysis.bond_length_mean_A, "bond length (Å)", "density (1/Å)", "Å"),
        (angles, analysis.angle_deg, analysis.angle_density_per_deg,
         analysis.angle_mean_deg, "bond angle (°)", "density (1/°)", "°"),
    )  # fmt: skip
    for ax, x, densities, means, xlabel, ylabel, unit in panels:
        if not densities:
            ax.set_axis_off()
            continue
        for k, (label, density) in enumerate(densities.items()):
            label_text = f"{label} (mean {means[label]:.3g} {unit})"
            ax.plot(x, density, color=_colour(k), lw=1.5, label=label_text)
        ax.set_xlim(*_visible_range(x, densities.values()))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    fig.suptitle(f"{_title(analysis)}: bonds and angles by element")
    return _save(fig, path)


def plot_vacf(analysis: TrajectoryAnalysis, path: Path) -> Path:
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    colours = iter(range(len(analysis.vacf)))
    for name, c in analysis.vacf.items():
        black = name == "all"
        ax.plot(
            analysis.vacf_lag_fs, c, lw=2.0 if black else 1.3,
            color="black" if black else _colour(next(colours)),
            label="all atoms" if black else name,
        )  # fmt: skip
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("lag (fs)")
    ax.set_ylabel("⟨v(t)·v(t+lag)⟩ / ⟨v·v⟩")
    ax.set_xlim(0, analysis.vacf_lag_fs[-1])
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(f"{_title(analysis)}\nvelocity autocorrelation")
    return _save(fig, path)


def plot_msd(analysis: TrajectoryAnalysis, path: Path) -> Path:
    """MSD per element against lag; the fitted line over the second half of the window, D."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    lag_ps = analysis.msd_lag_fs / 1000
    for k, (name, msd) in enumerate(analysis.msd_A2.items()):
        d = analysis.diffusivity_cm2_per_s[name]
        label = name if d is None else f"{name}: D = {d:.3g} cm²/s"
        ax.plot(lag_ps, msd, color=_colour(k), lw=1.8, label=label)
        if d is not None:
            # D (cm²/s) × 10 = slope / 6 in Å²/fs; draw the fitted line where it was fitted
            half = lag_ps >= lag_ps[-1] / 2
            slope, intercept = np.polyfit(analysis.msd_lag_fs[half], msd[half], 1)
            ax.plot(
                lag_ps[half], slope * analysis.msd_lag_fs[half] + intercept,
                color="black", lw=1.0, ls="--",
            )  # fmt: skip
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("MSD (Å²)")
    ax.set_xlim(0, lag_ps[-1] if len(lag_ps) > 1 else 1.0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, title="dashed: fit over the second half")
    ax.set_title(f"{_title(analysis)}\nmean-squared displacement (centre of mass removed)")
    return _save(fig, path)


def plot_energies(analysis: TrajectoryAnalysis, path: Path) -> Path:
    """Temperature and energies of every replica against time; × where a replica's series ends
    early (frozen as unstable)."""
    names = [n for n in _SERIES_LABELS if any(n in s.values for s in analysis.series)]
    fig = Figure(figsize=(7.5, 2.3 * len(names) + 0.8))
    axes = np.atleast_1d(fig.subplots(len(names), 1, sharex=True))
    cmap = colormaps["viridis"]
    n = len(analysis.series)
    legend = n <= MAX_LEGEND_REPLICAS
    for k, series in enumerate(analysis.series):
        colour = colormaps["tab10"](k) if legend else cmap(k / max(n - 1, 1))
        t_ps = series.time_fs / 1000
        for ax, name in zip(axes, names, strict=True):
            values = series.values.get(name)
            if values is None or len(values) == 0:
                continue
            values = np.where(np.isfinite(values), values, np.nan)  # gaps, not infinite limits
            if name == "conserved_energy":
                values = values - values[0]
            ax.plot(t_ps, values, color=colour, lw=0.9, alpha=0.9, label=f"replica {k}")
            if series.ended_early:
                ax.plot(t_ps[-1], values[-1], "x", color="black", ms=7, mew=1.5)
    for ax, name in zip(axes, names, strict=True):
        ax.set_ylabel(_SERIES_LABELS[name])
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (ps)")
    axes[-1].set_xlim(left=0)
    if legend:
        axes[0].legend(frameon=False, fontsize="small", ncol=min(n, 4))
    ended = sum(s.ended_early for s in analysis.series)
    note = f"; × marks the {ended} series that end early (frozen)" if ended else ""
    axes[0].set_title(f"{_title(analysis)}{note}")
    return _save(fig, path)


def write_plots(analysis: TrajectoryAnalysis, out: Path) -> list[Path]:
    """Every plot the analysis has data for, into the directory ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_h_r(analysis, out / "h_r.png")]
    if analysis.rdf:
        paths.append(plot_rdf(analysis, out / "rdf.png"))
    if analysis.bond_length_density_per_A:
        paths.append(plot_bonds(analysis, out / "bonds.png"))
    if analysis.vacf:
        paths.append(plot_vacf(analysis, out / "vacf.png"))
    if analysis.msd_A2 and len(analysis.msd_lag_fs) > 1:
        paths.append(plot_msd(analysis, out / "msd.png"))
    paths.append(plot_energies(analysis, out / "energies.png"))
    if analysis.phi_deg is not None:
        sampled = (analysis.phi_deg, analysis.psi_deg)
        title = f"{_title(analysis)}\nRamachandran plot"
        paths.append(ramachandran_plot(sampled, None, out / "ramachandran.png", title, dpi=DPI))
    return paths
