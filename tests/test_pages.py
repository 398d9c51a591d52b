"""report.html pages: built from a run's (sweep's, suite night's) files, self-contained, and saying what the
tables say. A real run makes the files; the page is parsed with html.parser."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from sanity_cli import pages

from test_cli import assert_one_line_error

CHEAP = ("method=[gradient,guided_backprop,sobel]", "metric=[spearman_abs,ssim]", "n_images=4", "grid_images=2")


class Page(HTMLParser):
    """Every src/href, every img, and the verdict table's cells, row by row."""

    def __init__(self, text: str):
        super().__init__()
        self.refs, self.images, self.rows, self._table, self._row, self._cell = [], [], [], None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table" and attrs.get("id") in ("verdict", "verdicts"):
            self._table = []
        if tag == "tr" and self._table is not None:
            self._row = []
        if tag == "td" and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        if tag == "tr" and self._row:
            self._table.append(self._row)
            self._row = None
        if tag == "table" and self._table is not None:
            self.rows, self._table = self._table, None


def assert_self_contained(page: Page, directory: Path) -> None:
    for ref in page.refs:
        assert ref.startswith("data:image/png;base64,") or (
            "://" not in ref and not ref.startswith("/") and (directory / ref).exists()), ref


def test_a_run_page_says_what_verdict_csv_says_and_embeds_every_figure(sanity, tmp_path):
    result = sanity("run", *CHEAP, "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    page = Page((run / "report.html").read_text())
    verdict = pd.read_csv(run / "verdict.csv")
    assert [row[0] for row in page.rows] == verdict["method"].tolist()
    for row, expected in zip(page.rows, verdict.itertuples()):
        assert row[1] == f"{expected.similarity:.3f}" and row[6] == expected.verdict
        assert row[3] == ("" if pd.isna(expected.null_similarity) else f"{expected.null_similarity:.3f}")
    figures = sorted(p.name for p in run.glob("*.png"))
    assert len(figures) == 5 and len(page.images) == len(figures)  # 2 images x 2 modes + similarity
    assert_self_contained(page, run)
    assert "sanity run " in (run / "report.html").read_text()  # the command to reproduce it


def test_sanity_report_rebuilds_run_and_sweep_pages_and_refuses_other_directories(sanity, tmp_path):
    result = sanity("run", "-m", *CHEAP, "plots=false", "seed=0,1", "hydra.sweep.dir=sweep")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "sweep"
    page = Page((sweep / "report.html").read_text())
    verdict = pd.read_csv(sweep / "sweep_verdict.csv")
    assert len(page.rows) == len(verdict) and {row[0] for row in page.rows} == set(verdict["job"])
    assert_self_contained(page, sweep)
    # each row links its job, and so does each cell of the leaderboard (methods x jobs: one per verdict row)
    assert sum(ref.endswith("/report.html") for ref in page.refs) == 2 * len(verdict)

    job = next(p.parent for p in sweep.rglob("verdict.csv") if p.parent != sweep)
    (job / "report.html").unlink()
    again = sanity("report", str(job), str(sweep))
    assert again.returncode == 0 and (job / "report.html").exists()
    assert again.stdout.count("page: ") == 2

    empty = tmp_path / "nothing here"
    empty.mkdir()
    assert_one_line_error(sanity("report", str(empty)), "holds no finished sanity run", str(empty))
    assert not list(empty.iterdir())


def test_a_suite_night_page_links_each_job(tmp_path):
    """Built from files alone (no run): a night with one job's finished run copied in."""
    night = tmp_path / "reproduce" / "nightly" / "2026-01-01_03-00-00"
    (night / "job").mkdir(parents=True)
    pd.DataFrame([{"job": "job", "method": "gradient", "role": "method", "similarity": 0.1, "ci_low": 0.0,
                   "ci_high": 0.2, "n": 4, "null_similarity": 0.1, "null_ci_low": 0.0, "null_ci_high": 0.3,
                   "verdict": "PASS", "reason": "no more similar than maps of two different images"}]
                 ).to_csv(night / "suite_verdict.csv", index=False)
    (page_path,) = pages.build(night)
    page = Page(page_path.read_text())
    assert page.rows == [["job", "gradient", "0.100", "[+0.00, +0.20]", "0.100", "PASS",
                          "no more similar than maps of two different images"]]
    assert_self_contained(page, night)


def test_a_suite_page_leads_with_the_methods_by_jobs_leaderboard(tmp_path):
    """issue 26: a suite of several jobs (`sanity reproduce leaderboard`) gets a methods x jobs table: each cell the
    method's verdict and similarity / null, linking to the job's page; most PASS first, controls last."""
    night = tmp_path / "reproduce" / "leaderboard" / "2026-01-01_03-00-00"
    rows = []
    for job, outcomes in {"cnn_cascading": {"gradient": "PASS", "guided_backprop": "FAIL", "sobel": "reference"},
                          "cnn_data": {"gradient": "PASS", "guided_backprop": "INCONCLUSIVE"}}.items():
        (night / job).mkdir(parents=True)
        (night / job / "report.html").write_text("<html></html>")
        for k, (method, verdict) in enumerate(outcomes.items()):
            rows.append({"job": job, "method": method, "role": "control" if method == "sobel" else "method",
                         "metric": "ssim", "similarity": 0.1 * (k + 1), "ci_low": 0.0, "ci_high": 0.5, "n": 4,
                         "null_similarity": 0.2, "null_ci_low": 0.1, "null_ci_high": 0.3, "verdict": verdict,
                         "reason": ""})
    pd.DataFrame(rows[::-1]).to_csv(night / "suite_verdict.csv", index=False)
    board = pages.leaderboard(pd.read_csv(night / "suite_verdict.csv"),
                              {"cnn_cascading": "cnn_cascading/report.html", "cnn_data": "cnn_data/report.html"})
    assert board["jobs"] == ["cnn_data", "cnn_cascading"]
    assert [r["method"] for r in board["rows"]] == ["gradient", "guided_backprop", "sobel"]
    assert [r["passes"] for r in board["rows"]] == [2, 0, 0]
    gbp = board["rows"][1]["cells"]
    assert [c["verdict"] for c in gbp] == ["INCONCLUSIVE", "FAIL"] and gbp[1]["value"] == "0.200 / 0.200"
    assert board["rows"][2]["cells"][0] is None  # sobel was not in cnn_data
    (page_path,) = pages.build(night)
    text = page_path.read_text()
    assert 'id="leaderboard"' in text and 'href="cnn_cascading/report.html"' in text
    assert text.index('id="leaderboard"') < text.index('id="verdicts"')
    assert pages.leaderboard(pd.read_csv(night / "suite_verdict.csv").query("job == 'cnn_data'"), {}) is None


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.mark.skipif(not any(shutil.which(b) for b in BROWSERS),
                    reason="no headless browser: .ci/run installs Debian's chromium when apt can reach its "
                           "repository; without it the pages are checked by parsing only")
def test_the_page_renders_in_a_headless_browser(sanity, tmp_path):
    """Chromium (headless) opens the run's page from disk: the screenshot is not blank, shows the verdict colours,
    and the browser logs no console error."""
    import subprocess

    import numpy as np
    from PIL import Image

    assert sanity("run", *CHEAP, "hydra.run.dir=run").returncode == 0
    browser = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--screenshot={shot}", "--window-size=1280,1600",
                           (tmp_path / "run" / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("RGB"), float)
    assert pixels.std() > 10, "blank screenshot"
    greenish = (pixels[..., 1] > 100) & (pixels[..., 0] < 60) & (pixels[..., 2] < 80)  # PASS is green text
    reddish = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)   # FAIL is red text
    assert greenish.sum() + reddish.sum() > 20, "no verdict colour rendered"


def test_history_lists_every_verdict_change_between_nights(tmp_path):
    root = tmp_path / "reproduce" / "nightly"
    for night, (verdict, similarity) in {"2026-01-01_03-00-00": ("PASS", 0.1), "2026-01-02_03-00-00": ("PASS", 0.12),
                                         "2026-01-03_03-00-00": ("FAIL", 0.6)}.items():
        (root / night).mkdir(parents=True)
        pd.DataFrame([{"job": "cnn", "method": "gradient", "role": "method", "similarity": similarity,
                       "ci_low": 0.0, "ci_high": 0.7, "n": 4, "null_similarity": 0.1, "null_ci_low": 0.0,
                       "null_ci_high": 0.3, "verdict": verdict, "reason": ""},
                      {"job": "cnn", "method": "sobel", "role": "control", "similarity": 1.0, "ci_low": 1.0,
                       "ci_high": 1.0, "n": 4, "null_similarity": 0.5, "null_ci_low": 0.4, "null_ci_high": 0.6,
                       "verdict": "reference", "reason": ""}]).to_csv(root / night / "suite_verdict.csv", index=False)
    built = pages.build(root)
    assert [p.name for p in built] == ["report.html"] * 3 + ["history.html"]
    history = (root / "history.html").read_text()
    page = Page(history)
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
    assert_self_contained(page, root)
    assert "1 verdict changes" in history
    assert "<td>2026-01-03_03-00-00</td>" not in history  # the night is a link to its page
    assert history.count('class="FAIL">FAIL</td>') == 1 and "2026-01-03_03-00-00/report.html" in history


def test_every_value_is_escaped(tmp_path):
    """A method name or reason holding markup is shown as text, never interpreted."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"name": "m"}, "data": {"name": "d"}, "test": {"name": "cascading"},
              "budget": {"name": "smoke"}, "verdict": {"metric": "spearman_abs", "rule": "baseline", "threshold": 0.5}}
    (run / "manifest.json").write_text(json.dumps({"config": config, "command": ["sanity", "run"],
                                                   "captions": ["<script>alert(1)</script>"]}))
    pd.DataFrame([{"method": "<i>gradient", "role": "method", "similarity": 0.1, "ci_low": 0.0, "ci_high": 0.2,
                   "n": 4, "null_similarity": 0.1, "null_ci_low": 0.0, "null_ci_high": 0.3, "verdict": "FAIL",
                   "reason": "x <class 'int'> y", "compared": "a & b"}]).to_csv(run / "verdict.csv", index=False)
    text = pages.run_page(run).read_text()
    assert "<i>gradient" not in text and "&lt;i&gt;gradient" in text
    assert "&lt;class &#39;int&#39;&gt;" in text and "<script>" not in text
