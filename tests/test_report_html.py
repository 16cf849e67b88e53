"""report.html: the page's content from a real run, and the episode viewer rendered by a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firsthand import InvalidInputError
from firsthand.report_html import markdown_html, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
)


def test_markdown_tables_headings_and_code() -> None:
    text = "## Title\n\nSome **bold** `code` <x>.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```bash\nfirsthand run\n```\n"
    page = markdown_html(text).replace("\n", "")
    assert "<h3>Title</h3>" in page  # one level down: the page's title is its only h1
    assert "<p>Some <strong>bold</strong> <code>code</code> &lt;x&gt;.</p>" in page  # raw HTML escaped
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>" in page
    assert '<pre><code class="language-bash">firsthand run</code></pre>' in page


@pytest.fixture(scope="module")
def point(smoke_sweep: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a smoke sweep's point (a complete run directory), with one episode planted as IWM's win, so
    that the viewer's filters have something to find."""
    _, out, _ = smoke_sweep
    folder = tmp_path_factory.mktemp("html") / "run"
    shutil.copytree(out / "points" / "k-2", folder)
    path = folder / "eval" / "iwm-seed0-id_test.json"
    evaluation = json.loads(path.read_text())
    evaluation["episodes"][1]["won"] = True
    path.write_text(json.dumps(evaluation))
    path = folder / "eval" / "sr-seed0-id_test.json"  # a ScienceWorld-long observation, which has to fold
    evaluation = json.loads(path.read_text())
    evaluation["episodes"][0]["observations"][1] = "You see a long room. " * 150
    path.write_text(json.dumps(evaluation))
    write_html(folder)
    return folder


def test_the_page_holds_tables_plots_episodes_data_and_settings(point: Path) -> None:
    page = (point / "report.html").read_text()
    assert "<th>method</th>" in page and "<td>IWM</td>" in page and "<td>SR</td>" in page
    assert page.count('src="data:image/png;base64,') == 1  # results.png, embedded
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from a network
    data = json.loads(re.search(r'id="episodes-data">(.*?)</script>', page, re.S)[1])
    assert data["methods"] == ["random", "il", "iwm", "sr"]  # IL trains for the validated budget
    episode = data["episodes"]["id_test"]["0"]["sr"]["id_test-0"]
    assert len(episode["observations"]) == len(episode["actions"]) + 1 == len(episode["invalid"]) + 1
    assert "Expert trajectories and their branches" in page and "Reflections (SR)" in page
    assert "World-model targets (IWM)" in page and "branch counters" in page
    assert "preset.json" in page and "train/sr-seed0 (train)" in page


def test_a_folder_without_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="holds no results.md or sweep.md"):
        write_html(tmp_path)


def _browser(*args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@needs_chromium
def test_chromium_renders_the_tables_and_the_viewer(point: Path) -> None:
    dom = _browser("--dump-dom", (point / "report.html").as_uri())
    assert "<td>IWM</td>" in dom  # the results table
    columns = re.findall(r'<div class="episode (won|lost)" data-method="([a-z+-]+)"', dom)
    assert [m for _, m in columns] == ["random", "il", "iwm", "sr"]  # one column per method, first task
    assert dom.count('<li class="step') >= 4
    assert "2 task(s)" in dom
    assert '<details><summary class="obs">You see a long room. You see a long room.' in dom  # folded


@needs_chromium
def test_the_viewer_filters_won_by_one_method_and_lost_by_another(point: Path) -> None:
    url = (point / "report.html").as_uri() + "#won-by=iwm&lost-by=sr"
    dom = _browser("--dump-dom", url)
    assert "1 task(s)" in dom  # only the planted win
    assert '<div class="episode won" data-method="iwm">' in dom and "id_test-1 (won by: IWM)" in dom
    nothing = _browser("--dump-dom", (point / "report.html").as_uri() + "#won-by=sr")
    assert "0 task(s)" in nothing and "No episode matches." in nothing


@needs_chromium
def test_a_screenshot_of_the_page(point: Path) -> None:
    shot = point / "report.png"
    _browser("--window-size=1400,1800", f"--screenshot={shot}", (point / "report.html").as_uri())
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000
