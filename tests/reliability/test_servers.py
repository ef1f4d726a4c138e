"""Servers: whatever the package or its tests start listens on 127.0.0.1 only, behind a token.

Two checks. A scan of every source, notebook, config and document in the repository: no
wildcard address, no disabled token, every socket bound to 127.0.0.1, every JupyterLab launch
given ``ip=127.0.0.1`` and a token, and no HTTP server in the package. And a live check: using
the interactive parts of the package (the explorer widget, plotly figures, the HTML report)
opens no listening socket in this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve()
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".txt", ".json", ""}

# Written so that this file does not match its own patterns.
WILDCARD = re.compile(r"\b0\.0\.0\.0\b|\[::\]|ip\s*=\s*['\"]?\*")
# An empty token: token='' (Python), or a command-line token= with nothing after it.
EMPTY_TOKEN = re.compile(
    r"token\s*=\s*(''|\"\")|token=(?=[\"']\s*[,)\]]|\s|$)|disable_check_xsrf|allow_remote_access", re.IGNORECASE
)
BIND = re.compile(r"\.bind\(\s*\(\s*([^,]+),")
JUPYTER_LAUNCH = re.compile(r"jupyter[\"',\s]+(lab|notebook|server)\b|-m[\"',\s]+jupyterlab\b")
HTTP_SERVERS = re.compile(
    r"http\.server|socketserver|HTTPServer|serve_forever|\.listen\(|renderer\s*=\s*['\"]browser|webbrowser"
)


def _repository_files() -> list[Path]:
    """Files git tracks or would track (not ignored), as text; this file excluded."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    files = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if path.suffix in TEXT_SUFFIXES and path.is_file() and path.resolve() != THIS_FILE:
            files.append(path)
    return files


def _source_text(path: Path) -> str:
    """The text of a file; for a notebook, its code and markdown cells (not its outputs)."""
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        cells = json.loads(text).get("cells", [])
        return "\n".join("".join(cell.get("source", [])) for cell in cells)
    return text


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("jupyter lab --ip=" + "0.0.0.0", WILDCARD),
        ("c.ServerApp.ip = '*'", WILDCARD),
        ('"--ServerApp.token=",', EMPTY_TOKEN),
        ("c.ServerApp.token = ''", EMPTY_TOKEN),
        ("jupyter lab --NotebookApp.token= --port 8888", EMPTY_TOKEN),
        ("server.serve_forever()", HTTP_SERVERS),
        ('fig.show(renderer="browser")', HTTP_SERVERS),
        ('[sys.executable, "-m", "jupyter", "lab", "--no-browser"]', JUPYTER_LAUNCH),
    ],
)
def test_the_scan_recognises_what_it_forbids(line: str, pattern: re.Pattern[str]) -> None:
    assert pattern.search(line)
    assert not WILDCARD.search('f"--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}"')
    assert not EMPTY_TOKEN.search("port, token = _free_port(), secrets.token_hex(16)")


def test_no_wildcard_address_or_disabled_token_anywhere(cases) -> None:
    problems = []
    for path in _repository_files():
        for number, line in enumerate(_source_text(path).splitlines(), start=1):
            if WILDCARD.search(line) or EMPTY_TOKEN.search(line):
                problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
        cases.add("servers.files_scanned", "clean")
    assert not problems, "listening on every address or without a token:\n" + "\n".join(problems)


def test_every_socket_binds_to_localhost(cases) -> None:
    problems = []
    for path in _repository_files():
        for match in BIND.finditer(_source_text(path)):
            host = match.group(1).strip()
            if host not in ('"127.0.0.1"', "'127.0.0.1'", '"localhost"', "'localhost'"):
                problems.append(f"{path.relative_to(REPO)}: bind to {host}")
            cases.add("servers.binds", "localhost")
    assert not problems, "\n".join(problems)


def test_every_jupyter_server_gets_localhost_and_a_token(cases) -> None:
    problems = []
    for path in _repository_files():
        text = _source_text(path)
        # Documents that tell a person to run `jupyter lab` rely on its defaults (localhost, a
        # random token); an unsafe option written there is caught by the wildcard/token scan.
        if path.suffix == ".md" or not JUPYTER_LAUNCH.search(text):
            continue
        if not re.search(r"ip=(127\.0\.0\.1|localhost)", text):
            problems.append(f"{path.relative_to(REPO)}: starts Jupyter without ip=127.0.0.1")
        if not re.search(r"token=[^\s'\"]|token=\{", text):
            problems.append(f"{path.relative_to(REPO)}: starts Jupyter without a token")
        cases.add("servers.jupyter_launches", "localhost+token")
    assert not problems, "\n".join(problems)


def test_the_package_starts_no_http_server(cases) -> None:
    problems = []
    for path in sorted((REPO / "hcl").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if HTTP_SERVERS.search(line):
                problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
        cases.add("servers.package_files", "clean")
    assert not problems, "\n".join(problems)


def _listening_sockets() -> set[int]:
    """Inodes of this process's sockets that are in the TCP LISTEN state (IPv4 and IPv6)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    listening.add(int(fields[9]))
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(int(target[8:-1]))
    return listening & mine


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_the_interactive_parts_open_no_listening_socket(tmp_path: Path, cases) -> None:
    from hcl import Hierarchy
    from hcl.viz import HierarchyExplorer, save_html, scatter_by_level

    before = _listening_sockets()
    hierarchy = Hierarchy.from_paths([("a", "x"), ("a", "y"), ("b", "z")])
    labels = hierarchy.encode([("a", "x"), ("a", "y"), ("b", "z")] * 4)
    embeddings = np.random.default_rng(0).normal(size=(12, 4))
    explorer = HierarchyExplorer(embeddings, labels, hierarchy, method="pca")
    figure = scatter_by_level(explorer.coords, labels, hierarchy)
    save_html(figure, tmp_path / "figure.html")
    assert _listening_sockets() == before, "a listening socket was opened"
    cases.add("servers.live_check", "no listener")
