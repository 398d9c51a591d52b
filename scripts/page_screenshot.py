#!/usr/bin/env python3
"""A screenshot of a real report.html for the README (docs/report_page.png).

    python scripts/page_screenshot.py RUN_DIR [--out docs/report_page.png]

RUN_DIR is a finished `sanity run` directory (its page is rebuilt first with `sanity report`); the page is opened
by headless Chromium (Debian's `chromium`) at 1280 px wide and the top 1600 px are saved.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/report_page.png"))
    args = parser.parse_args(argv)
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        print("page_screenshot: no chromium found; apt-get install chromium", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "sanity_cli", "report", str(args.run_dir)], check=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={args.out.resolve()}", "--window-size=1280,1600",
                    (args.run_dir.resolve() / "report.html").as_uri()], check=True, capture_output=True)
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
