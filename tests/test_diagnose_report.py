"""The diagnosis report: a self-contained page whose verdicts follow their thresholds and agree
with report.json, and ``stablemd diagnose`` end to end on a tiny model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from dataclasses import replace
from html.parser import HTMLParser

import ase.io
import pytest
import torch
from matplotlib.figure import Figure as MatplotlibFigure
from PIL import Image

from stablemd.cli.main import main
from stablemd.data.database import read_frames, write_frames
from stablemd.diagnose.early_warning import CriticalLevel, fit_latent_domain
from stablemd.diagnose.early_warning.model_file import EarlyWarning, attach_early_warning
from stablemd.diagnose.early_warning.report import early_warning_record
from stablemd.diagnose.held_out import HeldOutErrors
from stablemd.diagnose.report import (
    Figure,
    Section,
    Table,
    Verdict,
    status_above,
    worst_status,
    write_report,
)
from stablemd.diagnose.report.sections.early_warning import early_warning_section
from stablemd.diagnose.report.sections.held_out import held_out_section
from stablemd.diagnose.report.sections.stability import stability_status
from stablemd.diagnose.report.workflow import (
    DiagnoseSettings,
    check_report_directory,
    load_inputs,
)
from stablemd.diagnose.stability.benchmark import ModelStability
from stablemd.diagnose.stability.report import summarize
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential, save_potential
from stablemd.systems import get_system


def _plot(kind: str) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(3, 2))
    ax = fig.add_subplot()
    if kind == "bar":
        ax.bar([0, 1, 2], [3, 1, 2], color="tab:red")
    else:
        ax.plot([0, 1, 2], [0, 1, 4], color="tab:blue", lw=3)
    return fig


def example_sections() -> list[Section]:
    """Two sections, three figures, every status, text that must be escaped."""
    return [
        Section(
            title="Errors <per> element",
            summary="First paragraph & more.\n\nSecond paragraph.",
            verdicts=[
                Verdict("force MAE", 0.05, "warn > 0.1, fail > 0.3 eV/Å", "pass", "eV/Å"),
                Verdict("energy MAE", 0.02, "warn > 0.01", "warn", "eV", note="a <note>"),
            ],
            figures=[Figure(_plot("bar"), "Bars"), Figure(_plot("line"), "A line", "alt text")],
            tables=[Table(["element", "MAE"], [["H", 0.01], ["O", None]], "per element")],
            data={"per_element": {"H": 0.01, "O": None}},
        ),
        Section(
            title="Stability",
            summary="Short run.",
            verdicts=[Verdict("stable replicas", 25.0, "fail: median < run", "fail", "%")],
            figures=[Figure(_plot("line"), "Survival")],
            data={"times": [1.0, None]},
        ),
    ]


class PageParser(HTMLParser):
    """The tags and attributes that decide whether a page is self-contained, and its verdicts."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.sources, self.verdicts, self.tags = [], [], [], [], set()
        self.rows: list[list[str]] = []  # the visible cells of each verdict row
        self._row: list[str] | None = None

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append([" ".join(cell.split()) for cell in self._row])
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._row:
            self._row[-1] += data

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "td" and self._row is not None:
            self._row.append("")
        if tag == "tr" and "data-check" in attrs:
            self._row = []
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "srcset", "data", "poster"):
            if key in attrs:
                self.sources.append(attrs[key])
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "tr" and "data-check" in attrs:
            self.verdicts.append((attrs["data-check"], attrs["data-status"]))


def _parse(path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_page_is_self_contained_and_every_figure_is_embedded(tmp_path):
    sections = example_sections()
    paths = write_report(sections, tmp_path / "out", "A <title>", {"model": "m.pt"})
    text = paths.html.read_text(encoding="utf-8")
    page = _parse(paths.html)
    # nothing from elsewhere: no scripts, stylesheets, frames; every link an anchor in the page
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert all(link.startswith("#") for link in page.links), page.links
    assert "url(" not in text and "@import" not in text
    assert all(source.startswith("data:image/png;base64,") for source in page.sources)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|file:|//)""", text)
    anchors = set(re.findall(r'id="([^"]+)"', text))
    assert {link[1:] for link in page.links} <= anchors
    # every figure once, decodable, of the size it says, in the order of the sections
    figures = [f for s in sections for f in s.figures]
    assert len(page.images) == len(figures) == 3
    for attrs, figure in zip(page.images, figures, strict=True):
        png = base64.b64decode(attrs["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert png == figure.png
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.format == "PNG" and image.size == (figure.width, figure.height)
        assert image.size == (int(attrs["width"]), int(attrs["height"]))
        assert attrs["alt"] == figure.alt
        assert len(image.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 10  # drawn
    # text is escaped, not markup
    assert "A &lt;title&gt;" in text and "a &lt;note&gt;" in text and "<note>" not in text
    assert "Errors &lt;per&gt; element" in text


def test_json_round_trips_with_the_verdicts_of_the_page(tmp_path):
    sections = example_sections()
    meta = {"model": "m.pt", "system": "ethanol", "settings": {"replicas": 16}}
    paths = write_report(sections, tmp_path, "title", meta)
    report = json.loads(paths.json.read_text())
    expected = [(v.check, v.status) for s in sections for v in s.verdicts]
    assert _parse(paths.html).verdicts[: len(expected)] == expected  # the summary table
    assert [(v["check"], v["status"]) for v in report["verdicts"]] == expected
    assert [v["section"] for v in report["verdicts"]] == [
        "Errors <per> element", "Errors <per> element", "Stability"
    ]  # fmt: skip
    assert [v["value"] for v in report["verdicts"]] == [0.05, 0.02, 25.0]
    assert report["status"] == "fail" == worst_status([v for s in sections for v in s.verdicts])
    assert [s["status"] for s in report["sections"]] == ["warn", "fail"]
    assert report["sections"][0]["data"] == sections[0].data
    assert report["sections"][0]["tables"][0]["rows"] == [["H", 0.01], ["O", None]]
    assert report["meta"]["settings"] == {"replicas": 16}
    assert report["meta"]["stablemd_version"] and report["meta"]["date"]
    # what people read: the summary table's cells, then each section's table repeats them
    page = _parse(paths.html)
    assert page.verdicts == expected + expected
    shown = [
        [v["section"], v["check"], f"{v['value']:.4g} {v['unit']}", v["threshold"],
         v["status"].upper(), v["note"]]
        for v in report["verdicts"]
    ]  # fmt: skip
    assert page.rows == shown + [row[1:] for row in shown]


def test_non_finite_numbers_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="not finite"):
        Verdict("x", math.nan, "warn > 1", "pass")
    with pytest.raises(ValueError, match="not finite"):
        Verdict("x", math.inf, "warn > 1", "pass")
    with pytest.raises(ValueError, match="status 'ok'"):
        Verdict("x", 1.0, "warn > 1", "ok")
    for bad in ({"value": math.nan}, {"nested": [1.0, {"x": -math.inf}]}):
        sections = [Section("s", data=bad)]
        with pytest.raises(ValueError, match="Out of range float"):
            write_report(sections, tmp_path / "out", "t", {})
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError):
        write_report([Section("s")], tmp_path / "out", "t", {"x": math.nan})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "pass"), (0.1, "pass"), (0.1001, "warn"), (0.3, "warn"), (0.31, "fail"),
     (None, "fail"), (math.nan, "fail"), (math.inf, "fail")],
)  # fmt: skip
def test_status_above_follows_its_thresholds(value, expected):
    assert status_above(value, warn=0.1, fail=0.3) == expected


def _errors(mae: dict[str, float]) -> HeldOutErrors:
    per_element = {e: {"mae": v, "rmse": 1.3 * v} for e, v in mae.items()}
    mean = sum(mae.values()) / len(mae)
    metrics = {
        "n_frames": 5,
        "energy_per_structure_eV": {"mae": 0.01, "rmse": 0.02},
        "energy_per_atom_eV": {"mae": 0.001, "rmse": 0.002},
        "forces_eV_per_A": {"mae": mean, "rmse": 1.3 * mean},
        "forces_per_element_eV_per_A": per_element,
    }
    return HeldOutErrors(metrics, list(range(5)), None)


@pytest.mark.parametrize(
    ("mae", "status", "worst"),
    [({"H": 0.02, "O": 0.05}, "pass", "O"), ({"H": 0.02, "O": 0.15}, "warn", "O"),
     ({"H": 0.35, "O": 0.05}, "fail", "H"), ({"H": 0.02, "O": math.nan}, "fail", "O"),
     ({"H": 0.05, "C": 0.05, "O": 0.05}, "pass", "H")],
)  # fmt: skip
def test_held_out_verdict_judges_the_worst_element(mae, status, worst, tmp_path):
    section = held_out_section(_errors(mae), "data.db", warn=0.1, fail=0.3)
    (verdict,) = section.verdicts
    assert verdict.status == status
    assert f"({worst})" in verdict.check
    assert verdict.value == (None if math.isnan(mae[worst]) else mae[worst])
    if math.isnan(mae[worst]):
        assert "non-finite" in verdict.note
    assert len(section.figures) == 1
    write_report([section], tmp_path, "t", {})  # NaN metrics are reported as null, not refused
    data = json.loads((tmp_path / "report.json").read_text())["sections"][0]["data"]
    assert data["metrics"]["forces_per_element_eV_per_A"][worst]["mae"] == verdict.value
    # a user threshold moves the verdict
    strict = held_out_section(_errors(mae), "data.db", warn=0.01, fail=0.04)
    assert strict.verdicts[0].status == "fail"


@pytest.mark.parametrize(
    ("times", "status"),
    [([None] * 4, "pass"), ([None, None, None, 1.5], "warn"), ([None, None, 0.5, 1.5], "fail"),
     ([0.1, 0.2, 0.3, 0.4], "fail"), ([None, None, None, 2.0], "warn")],
)  # fmt: skip
def test_stability_verdict_follows_median_and_failures(times, status):
    assert stability_status(summarize(times, 2.0)) == status


# -- the command --------------------------------------------------------------------------------


def run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture()
def workspace(tmp_path, ethanol_frames, monkeypatch):
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    save_potential(model, tmp_path / "model.pt")
    write_frames(tmp_path / "data.db", ethanol_frames[:10])
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


SHORT = ["--replicas", "2", "--time-ps", "0.01", "--conservation-replicas", "2",
         "--conservation-time-ps", "0.05", "--no-progress"]  # fmt: skip
COMMAND = ["diagnose", "--model", "model.pt", "--system", "ethanol", "--data", "data.db", *SHORT]


def test_diagnose_writes_both_files_and_refuses_an_existing_report(workspace, capsys):
    code, out, err = run([*COMMAND, "--out", "report"], capsys)
    assert code == 0, err
    html, report_json = workspace / "report" / "report.html", workspace / "report" / "report.json"
    assert html.is_file() and report_json.is_file()
    report = json.loads(report_json.read_text())
    assert [s["title"] for s in report["sections"]] == [
        "Held-out errors", "Are the forces conservative?", "Energy conservation in MD",
        "Stability in MD",
    ]  # fmt: skip
    conservative = {v["check"]: v["status"] for v in report["sections"][1]["verdicts"]}
    assert conservative["Jacobian asymmetry λ, conservative forces"] == "pass"
    assert conservative["work around a closed loop, conservative forces"] == "pass"
    assert report["meta"]["model"] == "model.pt" and report["meta"]["system"] == "ethanol"
    assert report["meta"]["settings"]["replicas"] == 2
    assert report["sections"][0]["data"]["n_frames"] == 10  # an untrained model: all frames
    assert report["sections"][3]["data"]["summary"]["n_replicas"] == 2
    # force bars, λ_ij, optimisation, NVE temperature, element temperatures, survival, h(r)
    assert len(_parse(html).images) == 7
    for verdict in report["verdicts"]:  # each verdict printed on one line
        assert f"{verdict['status'].upper():4}  {verdict['section']}: {verdict['check']}" in out
    assert "report/report.html" in out

    before = snapshot(workspace)
    code, _, err = run([*COMMAND, "--out", "report"], capsys)
    assert code == 2 and "--out report: already holds a report (report.html)" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(workspace) == before

    # --overwrite replaces the report; the finished stability run of the same settings is kept
    result = workspace / "report" / "stability" / "result.json"
    kept = result.read_text()
    code, _, err = run([*COMMAND, "--out", "report", "--overwrite"], capsys)
    assert code == 0, err
    assert result.read_text() == kept
    # ... and run again under other settings
    code, _, err = run([*COMMAND, "--out", "report", "--overwrite", "--seed", "1"], capsys)
    assert code == 0, err
    assert json.loads(result.read_text()) != json.loads(kept)
    assert json.loads(report_json.read_text())["meta"]["settings"]["seed"] == 1


def test_overwrite_removes_the_old_report_before_the_new_run(workspace, capsys, monkeypatch):
    """Killed during the new run, --overwrite leaves no report of the old one behind."""
    import stablemd.diagnose.report.workflow as workflow

    assert run([*COMMAND, "--out", "report"], capsys)[0] == 0

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(workflow, "run_stability", killed)
    with pytest.raises(RuntimeError, match="killed"):
        main([*COMMAND, "--out", "report", "--overwrite", "--seed", "2"])
    assert not (workspace / "report" / "report.html").exists()
    assert not (workspace / "report" / "report.json").exists()


def test_diagnose_resumes_its_own_run_and_refuses_other_directories(workspace, capsys):
    assert run([*COMMAND, "--out", "report"], capsys)[0] == 0
    # killed after the stability run, before the report: the same command finishes it
    (workspace / "report" / "report.html").unlink()
    (workspace / "report" / "report.json").unlink()
    code, _, err = run([*COMMAND, "--out", "report"], capsys)
    assert code == 0, err
    assert (workspace / "report" / "report.html").is_file()
    # other options on that unfinished run, a foreign directory, an input: refused, unchanged
    (workspace / "report" / "report.html").unlink()
    (workspace / "report" / "report.json").unlink()
    (workspace / "other").mkdir()
    (workspace / "other" / "notes.txt").write_text("mine")
    ethanol = get_system("ethanol").atoms
    ase.io.write(workspace / "reversed.xyz", [ethanol, ethanol[::-1]])
    ase.io.write(workspace / "starts.xyz", [ethanol])
    refusals = [
        (["--out", "report", "--temperature", "300"], "temperature_K=500.0, not 300.0"),
        (["--out", "other"], "--out other: exists and holds files of something else"),
        (["--out", "data.db"], "--out data.db"),
        (["--out", "r2", "--force-mae-warn", "0.5"], "--force-mae-warn 0.5 is above"),
        (["--out", "r2", "--force-mae-fail", "0"], "--force-mae-fail 0"),
        (["--out", "r2", "--starts", "reversed.xyz"], "reversed.xyz: frame 1, atom 0 is H"),
        (["--out", "starts.xyz", "--starts", "starts.xyz"], "is also an input"),
    ]
    for extra, message in refusals:
        before = snapshot(workspace)
        code, _, err = run([*COMMAND, *extra], capsys)
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
        assert snapshot(workspace) == before


def test_diagnose_without_data_has_no_error_section(workspace, capsys):
    argv = ["diagnose", "--model", "model.pt", "--system", "ethanol", "--out", "r", *SHORT]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads((workspace / "r" / "report.json").read_text())
    assert [s["title"] for s in report["sections"]] == [
        "Are the forces conservative?", "Energy conservation in MD", "Stability in MD",
    ]  # fmt: skip
    assert len(_parse(workspace / "r" / "report.html").images) == 6  # all but the force bars


def test_a_direct_model_is_judged_on_the_forces_it_gives_in_md(tmp_path):
    """A direct-force model is scored on its direct head too; its energy head's −∂E/∂r (never
    fit to forces, unused in MD) must not decide the verdict."""
    errors = _errors({"H": 0.9, "O": 0.8})  # −∂E/∂r of an energy head fit to energies only
    direct = _errors({"H": 0.02, "O": 0.05}).metrics
    errors.metrics["direct_forces_eV_per_A"] = direct["forces_eV_per_A"]
    errors.metrics["direct_forces_per_element_eV_per_A"] = direct["forces_per_element_eV_per_A"]
    (verdict,) = held_out_section(errors, "data.db", 0.1, 0.3, forces="direct").verdicts
    assert verdict.status == "pass" and verdict.value == 0.05 and "direct" in verdict.check
    (verdict,) = held_out_section(errors, "data.db", 0.1, 0.3).verdicts
    assert verdict.status == "fail" and verdict.value == 0.9
    write_report([held_out_section(errors, "data.db", forces="direct")], tmp_path, "t", {})


def _warned_run(crossing_survivor: bool) -> ModelStability:
    """A stability result of 3 replicas over 1 ps with its early-warning record: one fails at
    0.7 ps after passing the level at 0.3 ps, one is never flagged, and one (stable) either
    passes the level and keeps growing or stays below it and levels off."""
    times = torch.arange(11, dtype=torch.float64) * 0.1
    third = times * 0.9 if crossing_survivor else torch.clamp(times * 0.1, max=0.03)
    cli = torch.stack([times * 0.5, torch.zeros(11), third], dim=1)
    cli[8:, 0] = math.nan
    failures = [0.7, None, None]
    reasons = ["bond_length_deviation", None, None]
    record = early_warning_record(
        {"times_ps": times, "cli_ps": cli}, CriticalLevel(0.1, 1.0), failures, reasons, 1.0,
        "grade", 2.0,
    )  # fmt: skip
    return ModelStability(summarize(failures, 1.0), None, 10.0, 1.0, None, reasons, record)


@pytest.mark.parametrize(("crossing_survivor", "status"), [(True, "warn"), (False, "pass")])
def test_early_warning_section_warns_of_stable_replicas_past_the_level(crossing_survivor, status):
    section = early_warning_section(_warned_run(crossing_survivor), "m.pt")
    verdicts = {v.check: v for v in section.verdicts}
    past = verdicts["stable replicas past the critical level"]
    assert past.status == status and past.value == (1.0 if crossing_survivor else 0.0)
    assert "1 of 1 failed replicas passed it before failing, median lead 0.4 ps" in past.note
    growing = verdicts["stable replicas whose index still grows at the end"]
    assert growing.status == status
    assert section.tables[0].rows[0][3:5] == [pytest.approx(0.3), pytest.approx(0.4)]
    assert len(section.figures) == 1
    json.dumps(section.to_json())  # JSON-able, no NaN
    assert early_warning_section(replace(_warned_run(True), early_warning=None), "m.pt") is None


def test_diagnose_of_a_model_with_a_latent_domain_reports_its_index(workspace, capsys):
    model = load_potential(workspace / "model.pt")
    frames = read_frames(workspace / "data.db")
    domain = fit_latent_domain(model, frames)
    attach_early_warning(model, EarlyWarning(domain, {"grade": CriticalLevel(1e-4, 0.005)}))
    save_potential(model, workspace / "warned.pt")
    command = [*COMMAND[:2], "warned.pt", *COMMAND[3:], "--out", "report"]
    code, out, err = run(command, capsys)
    assert code == 0, err
    report = json.loads((workspace / "report" / "report.json").read_text())
    assert report["sections"][-1]["title"] == "Early warning (latent instability)"
    data = report["sections"][-1]["data"]
    assert data["early_warning"]["critical_level_ps"] == 1e-4
    assert len(data["early_warning"]["final_cli_ps"]) == 2
    assert "Early warning (latent instability): stable replicas" in " ".join(out.split())
    # killed before the report: its stability run, with the warning, is the one to resume
    (workspace / "report" / "report.html").unlink()
    (workspace / "report" / "report.json").unlink()
    settings = DiagnoseSettings(replicas=2, time_ps=0.01, conservation_replicas=2,
                                conservation_time_ps=0.05)  # fmt: skip
    inputs = load_inputs(workspace / "warned.pt", get_system("ethanol"), settings, None)
    assert check_report_directory(workspace / "report", inputs, settings, False) is False
