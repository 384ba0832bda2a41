"""The report in a real browser: headless Chromium draws every plot of report.html.

A test copy of the page gets a small script that writes, once the page has loaded, each image's
decoded size into the DOM, which ``--dump-dom`` prints; the report itself has no script. A copy
with one image broken on purpose shows that the check can fail. A screenshot of the report
itself must not be blank. Skipped where no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from PIL import Image
from test_diagnose_report import example_sections

from stablemd.diagnose.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Writes [naturalWidth, naturalHeight, complete] of every <img> into the page once it loaded.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(
    Array.from(document.images, (img) => [img.naturalWidth, img.naturalHeight, img.complete]));
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium: apt-get install chromium")


def _chromium(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"  # its own profile: no clash with another browser
    return subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip


def _probe(browser: str, page, tmp_path) -> list[list]:
    """[naturalWidth, naturalHeight, complete] of each image of ``page`` as Chromium drew it."""
    copy = page.with_name("probe-" + page.name)
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = _chromium(
        browser, tmp_path, "--virtual-time-budget=10000", "--run-all-compositor-stages-before-draw",
        "--dump-dom", copy.as_uri(),
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1))


def test_every_plot_is_drawn_by_chromium(browser, tmp_path):
    sections = example_sections()
    paths = write_report(sections, tmp_path / "report", "Browser test", {"model": "m.pt"})
    assert "<script" not in paths.html.read_text()
    figures = [f for s in sections for f in s.figures]
    images = _probe(browser, paths.html, tmp_path)
    assert images == [[f.width, f.height, True] for f in figures]

    # the check can fail: the same page with one image's data cut short
    text = paths.html.read_text()
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken" / "report.html"
    broken.parent.mkdir()
    broken.write_text(text[:start] + text[start + 400 :])
    drawn = _probe(browser, broken, tmp_path)
    assert drawn[0][0] == 0 and all(w > 0 for w, _, _ in drawn[1:])


def test_screenshot_of_the_report_is_not_blank(browser, tmp_path):
    paths = write_report(example_sections(), tmp_path / "report", "Screenshot", {"model": "m"})
    shot = tmp_path / "shot.png"
    _chromium(browser, tmp_path, "--window-size=1000,2000", f"--screenshot={shot}",
              paths.html.as_uri())  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 2000)
    colours = image.getcolors(1 << 20)
    assert len(colours) > 50  # text, badges and plots, not one flat colour
    # the plots' own colours are on screen: tab:red bars and a tab:blue line
    pixels = {colour for _, colour in colours}
    for rgb in ((214, 39, 40), (31, 119, 180)):
        assert any(sum(abs(a - b) for a, b in zip(p, rgb, strict=True)) < 30 for p in pixels), rgb
