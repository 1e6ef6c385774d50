"""`bench report`: one self-contained HTML file, checked as text and as a reader sees it in
headless Chromium (Debian's chromium, driven by Playwright): the tables have their rows, every
figure is decoded and drawn, the failed and unfinished runs are shown as such, and the page's
screenshot is not blank."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from test_reporting import build_store
from typer.testing import CliRunner

from mbrl_bench.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def report(tmp_path: Path) -> Path:
    store = build_store(tmp_path / "results", damaged=False)
    res = CliRunner().invoke(app, ["report", str(store), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    return tmp_path / "r.html"


def test_the_report_lists_every_run_with_its_status_and_needs_no_network(report: Path) -> None:
    page = report.read_text()
    for seed in range(5):
        assert f"smoke/Pendulum-v1/sac/seed_{seed}" in page
    assert "smoke/Pendulum-v1/pets/seed_0" in page
    failed = re.search(r'<tr class="failed"><td>smoke/Pendulum-v1/sac/seed_4</td>.*?</tr>', page)
    assert failed and "NonFiniteError: loss is nan" in failed.group(0)
    assert re.search(r'<tr class="died"><td>smoke/Pendulum-v1/sac/seed_3</td>', page)
    assert "src=\"data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page loads something remote"
    assert "Sample efficiency" in page and "Settings of each algorithm" in page
    assert "<td>P(pets &gt; sac)</td>" in page  # the pair's probability of improvement


def test_a_folder_of_failed_runs_still_gets_its_report(tmp_path: Path) -> None:
    from test_reporting import write_run

    write_run(tmp_path / "r", "sac", 0, [1000, 2000], [1.0, 2.0], status="failed")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert '<tr class="failed"><td>smoke/Pendulum-v1/sac/seed_0</td>' in page
    assert "No learning curve" in page


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no runs found" in res.output


def test_the_report_in_headless_chromium_shows_its_tables_and_figures(report: Path,
                                                                      tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium: the README's test command installs it")
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    import matplotlib.image
    from playwright import sync_api  # a dev dependency

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(report.as_uri())
        images = page.evaluate("() => [...document.images].map(i => [i.complete, "
                               "i.naturalWidth, i.getBoundingClientRect().height])")
        tables = page.evaluate("() => Object.fromEntries([...document.querySelectorAll("
                               "'table')].map(t => [t.className, [t.rows.length, "
                               "t.getBoundingClientRect().height]]))")
        failed_color = page.evaluate("() => getComputedStyle(document.querySelector("
                                     "'tr.failed td')).backgroundColor")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert len(images) == 2  # learning curves, probability of improvement
    assert all(ok and width > 100 and height > 100 for ok, width, height in images)
    assert tables["efficiency"][0] > 1 and tables["efficiency"][1] > 50
    assert tables["runs"][0] == 1 + 6 and tables["runs"][1] > 50  # header and six runs
    assert failed_color not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 900 and pixels.std() > 0.05  # a long page, not blank
