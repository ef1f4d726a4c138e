"""The library stays readable in pieces: no module of hcl/ over 400 lines."""

from __future__ import annotations

from pathlib import Path

import hcl

PACKAGE = Path(hcl.__file__).resolve().parent
MAX_LINES = 400


def test_no_library_file_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): count
        for path in sorted(PACKAGE.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their seams (limit {MAX_LINES} lines): {long}"
