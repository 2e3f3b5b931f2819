"""Look at an explain report the way a user does: headless Chromium renders report.html to a PNG, and
the page and every figure are checked for being more than an empty frame.

    apt-get install -y chromium            # Debian/Ubuntu; any Chromium or Chrome on PATH works
    python -m experiments.report_screenshot REPORT_DIR [--out page.png] [--width 1100]

Checks (exit 1 and a line per failure otherwise): the page renders; every <img> of the page exists
as a PNG with real content (not one flat colour); the screenshot itself is not blank and is tall
enough to hold the tables and figures; no table cell of the HTML is cut with an ellipsis.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium on PATH: apt-get install -y chromium")


def content_fraction(png: Path) -> float:
    """Share of pixels that differ from the most common colour (0: a flat image)."""
    import matplotlib.image as mpimg
    import numpy as np
    img = mpimg.imread(png)[..., :3]
    flat = (img * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    return 1 - counts.max() / len(flat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report_dir")
    p.add_argument("--out", default=None, help="keep the screenshot here")
    p.add_argument("--width", type=int, default=1100)
    a = p.parse_args()
    page = Path(a.report_dir).resolve() / "report.html"
    if not page.is_file():
        raise SystemExit(f"{page}: no report (llmprobe explain RECORD --report DIR writes one)")
    html = page.read_text()
    problems = []
    imgs = re.findall(r'<img src="([^"]+)"', html)
    for src in imgs:
        f = page.parent / src
        if not f.is_file():
            problems.append(f"missing figure {src}")
        elif content_fraction(f) < 0.01:
            problems.append(f"figure {src} is (nearly) one flat colour")
    if "…" in html:
        problems.append("a table cell is cut with an ellipsis")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(a.out).resolve() if a.out else Path(tmp) / "page.png"
        height = 1200 + 900 * len(imgs)
        r = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={a.width},{height}", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
        if r.returncode or not shot.is_file():
            problems.append(f"Chromium could not render the page: {r.stderr.strip().splitlines()[-1:]}")
        else:
            frac = content_fraction(shot)
            print(f"{page}: {len(imgs)} figures, screenshot {shot} ({frac:.0%} of pixels drawn)")
            if frac < 0.02:
                problems.append("the rendered page is blank")
    for msg in problems:
        print(f"FAIL {msg}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
