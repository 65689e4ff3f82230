"""Screenshots of the synthesis report in headless Chromium, each cropped to one part of the page.

    python tools/screenshot.py [REPORT_HTML] [OUT_DIR]      (make screenshot)

REPORT_HTML defaults to outputs/report/synthesis.html, OUT_DIR to docs/. For each part (the summary,
the adversarial-training vs regularization table, the technique × scenario matrix) it cuts the
report's HTML down to that section's cells, renders it in headless Chromium at 1200 px wide and
trims the blank bottom: OUT_DIR/report-<part>.png. It also renders the whole page once and checks
what a reader would see: every section heading there, no code prompt, no widget output, no blank
page. Needs a Chromium on PATH (Debian/Ubuntu: `apt install chromium`; or Google Chrome); exits
with a one-line error when there is none.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

PARTS = {  # part: (the section's heading id starts with, the next section's heading id starts with)
    "summary": ("Summary:-the-answers-first", "Adversarial-training-vs-regularization"),
    "versus": ("Adversarial-training-vs-regularization", "How-each-claim-was-made"),
    "matrix": ("The-technique-%C3%97-scenario-matrix:-robust-training-under-shift", "Every-study's-cells"),
}
SECTIONS = ["Summary: the answers first", "Adversarial training vs regularization", "How each claim was made",
            "The technique × scenario matrix: robust training under shift", "Published anchors"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("screenshot: error: no Chromium on PATH (apt install chromium, or install Google Chrome)")


def _cell_start(html: str, heading_id: str) -> int:
    at = html.find(f'id="{heading_id}')
    if at < 0:
        sys.exit(f"screenshot: error: section {heading_id!r} not found in the report")
    return html.rfind('<div class="jp-Cell', 0, at)


def section(html: str, start_id: str, end_id: str) -> str:
    """The report with only the cells from ``start_id``'s heading up to ``end_id``'s."""
    first = html.find('<div class="jp-Cell')
    end_main = html.rfind("</main>")
    a, b = _cell_start(html, start_id), _cell_start(html, end_id)
    return html[:first] + html[a:b] + html[end_main:]


def render(chromium: str, html_file: Path, png: Path, height: int) -> Image.Image:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", f"--window-size=1200,{height}", f"--screenshot={png}",
                    html_file.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return Image.open(png).convert("RGB")


def trim(img: Image.Image, margin: int = 16) -> Image.Image:
    """Cut the white rows below the last non-white one."""
    grey = img.convert("L").point(lambda v: 255 if v < 245 else 0)
    box = grey.getbbox()
    return img if box is None else img.crop((0, 0, img.width, min(img.height, box[3] + margin)))


def main(argv: list[str]) -> None:
    report = Path(argv[0] if argv else "outputs/report/synthesis.html")
    out = Path(argv[1] if len(argv) > 1 else "docs")
    if not report.exists():
        sys.exit(f"screenshot: error: {report} does not exist (make study writes it)")
    html = report.read_text()
    chromium = browser()
    body = html[html.index("<body"):]
    problems = [f"section missing: {s}" for s in SECTIONS if s not in body]
    problems += ["a code prompt is shown"] * bool(re.search(r"In&nbsp;\[|>Out\[", body))
    problems += ["a widget output is left"] * ("application/vnd.jupyter.widget-view+json" in body)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        page = render(chromium, report, tmp / "page.png", 3000)
        if page.convert("L").getextrema()[0] > 200:
            problems.append("the page renders blank")
        for part, (start, end) in PARTS.items():
            cut = tmp / f"{part}.html"
            cut.write_text(section(html, start, end))
            shot = trim(render(chromium, cut, tmp / f"{part}.png", 2400))
            shot.save(out / f"report-{part}.png", optimize=True)
            print(f"{out / f'report-{part}.png'}: {shot.width}×{shot.height}")
    if problems:
        sys.exit("screenshot: the report has problems: " + "; ".join(problems))
    print(f"checked: {len(SECTIONS)} sections there, no code prompt, no widget output, the page not blank")


if __name__ == "__main__":
    main(sys.argv[1:])
