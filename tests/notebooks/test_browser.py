"""A real browser: notebook 06 in JupyterLab under headless Chromium, and a report.html offline.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package (its own browser
download is not used). Each test is bounded; the JupyterLab server is shut down in a finally.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Console noise from JupyterLab itself that says nothing about the notebook or the widgets.
_BENIGN_CONSOLE = ("Failed to load resource", "favicon", "/lsp/", "/api/kernelspecs", "newsapi")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (localhost only)
        return int(response.status)


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        # Playwright gives the browser a fresh temporary profile (it refuses --user-data-dir here).
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server on 127.0.0.1 (random port and token) serving a copy of notebooks/."""
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # No "get notified about Jupyter news?" pop-up over the page.
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), secrets.token_hex(16)
    env = os.environ | {
        "HCL_FAST": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
    }
    log = (tmp_path / "jupyterlab.log").open("w")
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
        f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}",
        "--LabApp.news_url=",
        # Nothing may reach the network: no extension index, no update check.
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {server.returncode}:\n{(tmp_path / 'jupyterlab.log').read_text()}"
                )
            try:
                if _get(f"{base}/api/status?token={token}") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("JupyterLab did not answer within 90 s")
            time.sleep(0.5)
        yield base, token, root
    finally:
        try:  # shuts the kernels down too
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
        except OSError:
            pass
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


def _watch_errors(page: object) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}")
            if msg.type == "error" and not any(b in msg.text for b in _BENIGN_CONSOLE)
            else None
        ),
    )
    return errors


# Execution state of the open notebook, read from JupyterLab's own model.
_NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext || !panel.sessionContext.session) { return null; }
  const cells = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== 'code') { continue; }
    const outputs = cell.outputs.toJSON();
    cells.push({count: cell.executionCount,
                errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)});
  }
  return {kernel: panel.sessionContext.session.kernel ? panel.sessionContext.session.kernel.status : null, cells};
}"""

# Fill colours of the explorer's scatter points (trace 0 of the FigureWidget).
_POINT_FILLS = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot) { return null; }
  const trace = plot.querySelector('.scatterlayer .trace');
  return trace ? Array.from(trace.querySelectorAll('path.point')).map(p => p.style.fill) : null;
}"""


@pytest.mark.timeout(300)
def test_explorer_notebook_runs_and_responds_in_jupyterlab(jupyterlab, browser, tmp_path: Path) -> None:
    base, token, _ = jupyterlab
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = _watch_errors(page)
    page.goto(f"{base}/lab/tree/06_explorer.ipynb?token={token}", timeout=90_000)
    page.wait_for_function(
        "() => { const s = (" + _NOTEBOOK_STATE + ")(); return s !== null && s.kernel === 'idle'; }", timeout=90_000
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        "() => { const s = (" + _NOTEBOOK_STATE + ")();"
        " return s !== null && s.kernel === 'idle' && s.cells.every(c => c.count !== null); }",
        timeout=200_000,
        polling=1000,
    )
    state = page.evaluate(_NOTEBOOK_STATE)
    assert [c["errors"] for c in state["cells"] if c["errors"]] == [], state

    dropdowns = page.locator(".widget-dropdown")
    subtree = dropdowns.filter(has_text="subtree").locator("select")
    level = dropdowns.filter(has_text="colour by").locator("select")
    subtree.scroll_into_view_if_needed()
    page.wait_for_function("() => { const f = (" + _POINT_FILLS + ")(); return f && f.length > 0; }", timeout=30_000)
    before = page.evaluate(_POINT_FILLS)
    assert "rgb(221, 221, 221)" not in before  # nothing dimmed while no subtree is chosen

    subtree.select_option(index=1)  # the first coarse node
    page.wait_for_function(
        "() => { const f = (" + _POINT_FILLS + ")(); return f && f.includes('rgb(221, 221, 221)'); }", timeout=30_000
    )
    assert "subtree" in page.locator(".js-plotly-plot .gtitle").first.text_content()

    legend_before = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    level.select_option(index=0)  # colour by the coarsest level
    page.wait_for_function(
        "(n) => document.querySelectorAll('.js-plotly-plot .legendtext').length !== n",
        arg=len(legend_before),
        timeout=30_000,
    )
    legend_after = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert 0 < len(legend_after) < len(legend_before)
    assert page.locator("table.hcl-neighbours tr").count() > 1
    page.screenshot(path=str(tmp_path / "explorer.png"), full_page=False)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    assert errors == []


@pytest.mark.timeout(180)
def test_report_renders_offline(browser, tmp_path: Path) -> None:
    from viz.fake_runs import write_fake_run

    from hcl.viz import write_report

    runs = {"HiMulConE": write_fake_run(tmp_path / "a", seed=0), "SupCon": write_fake_run(tmp_path / "b", seed=1)}
    report = write_report(runs, tmp_path / "report.html", method="pca")
    expected = report.read_text().count("Plotly.newPlot(")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = _watch_errors(page)
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(report.as_uri(), timeout=60_000)
    page.wait_for_function(
        "(n) => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n", arg=expected, timeout=60_000
    )
    plots = page.locator(".js-plotly-plot")
    assert plots.count() == expected == 6
    for i in range(expected):
        assert plots.nth(i).locator(".plot-container").count() == 1
    assert page.locator(".scatterlayer path.point").count() > 100  # the projections drew their points
    assert page.locator("table.metrics tr").count() > 5
    # plotly gives a legend that does not fit its figure a scroll bar: every legend must fit.
    scrollbars = page.evaluate(
        "() => [...document.querySelectorAll('.legend .scrollbar')].map(e => e.getBBox().height)"
    )
    assert scrollbars and max(scrollbars) == 0, scrollbars
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert remote == [] and errors == []


@pytest.mark.timeout(120)
def test_saved_scatter_shows_thumbnails_on_hover(browser, tmp_path: Path) -> None:
    import numpy as np
    from viz.fake_runs import toy_data

    from hcl.viz import project_2d, save_html, scatter_by_level

    emb, labels, hierarchy = toy_data(40)
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16), dtype=np.uint8)
    path = save_html(scatter_by_level(project_2d(emb, "pca"), labels, hierarchy, images=images), tmp_path / "s.html")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    errors = _watch_errors(page)
    page.goto(path.as_uri(), timeout=60_000)
    page.wait_for_selector(".scatterlayer path.point", timeout=30_000)
    thumbnail = "img[src^='data:image/png;base64,']"
    assert page.locator(thumbnail).first.is_hidden()
    box = page.locator(".scatterlayer path.point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector(thumbnail, state="visible", timeout=10_000)
    assert errors == []
