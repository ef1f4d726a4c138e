"""replace_marked_block: the generated block between two markers, replaced exactly and atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hcl.atomic
from hcl.textblock import block_markers, read_marked_block, replace_marked_block

README = (
    "# Title\r\n"  # a CRLF outside the block stays a CRLF
    "Hand-written prose.\n"
    "<!-- demo-table:start -->\n"
    "| old | table |\n"
    "<!-- demo-table:end -->\n"
    "More prose, <!-- other:start --> kept.\n"
)


def _readme(tmp_path: Path, text: str = README) -> Path:
    path = tmp_path / "README.md"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_block_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    path = _readme(tmp_path)
    assert read_marked_block(path, "demo-table") == "\n| old | table |\n"
    assert replace_marked_block(path, "demo-table", "\n\n| new | table |\n|---|---|\n\n") == path
    assert read_marked_block(path, "demo-table") == "\n| new | table |\n|---|---|\n"
    expected = README.replace("| old | table |\n", "| new | table |\n|---|---|\n")
    assert path.read_bytes() == expected.encode("utf-8")
    replace_marked_block(path, "demo-table", "| new | table |\n|---|---|")  # the same text: no change
    assert path.read_bytes() == expected.encode("utf-8")


def test_an_empty_block_and_a_block_on_one_line(tmp_path: Path) -> None:
    path = _readme(tmp_path, "a <!-- x:start --><!-- x:end --> b")
    replace_marked_block(path, "x", "é ü")
    assert path.read_text(encoding="utf-8") == "a <!-- x:start -->\né ü\n<!-- x:end --> b"
    replace_marked_block(path, "x", "")
    assert path.read_text(encoding="utf-8") == "a <!-- x:start -->\n<!-- x:end --> b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no markers at all\n", "does not contain the marker '<!-- demo-table:start -->'"),
        ("<!-- demo-table:start -->\nbody\n", "does not contain the marker '<!-- demo-table:end -->'"),
        (
            "<!-- demo-table:start -->\n<!-- demo-table:start -->\n<!-- demo-table:end -->\n",
            "contains 2 times the marker '<!-- demo-table:start -->'",
        ),
        (
            "<!-- demo-table:end -->\n<!-- demo-table:start -->\n",
            "the marker '<!-- demo-table:end -->' comes before '<!-- demo-table:start -->'",
        ),
    ],
)
def test_bad_markers_name_the_file_and_the_marker_and_touch_nothing(tmp_path: Path, text: str, message: str) -> None:
    path = _readme(tmp_path, text)
    calls = (lambda: replace_marked_block(path, "demo-table", "new"), lambda: read_marked_block(path, "demo-table"))
    for call in calls:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(str(path)) and message in str(error.value)
    assert path.read_text() == text


def test_a_missing_file_and_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        replace_marked_block(tmp_path / "nope.md", "demo-table", "x")
    for name in ("", "two words", "a-->b", None):
        with pytest.raises(ValueError, match="a block name is letters"):
            block_markers(name)  # type: ignore[arg-type]
    assert block_markers("study-summary") == ("<!-- study-summary:start -->", "<!-- study-summary:end -->")


def test_the_rewrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new file is written beside the old one and swapped in with os.replace: a failure before
    the swap leaves the old file whole and no temporary file behind."""
    path = _readme(tmp_path)
    swaps = []

    def failing_replace(source: str, target: os.PathLike[str]) -> None:
        swaps.append((Path(source).parent, Path(source).read_text(encoding="utf-8"), Path(target)))
        raise OSError("disk gone")

    monkeypatch.setattr(hcl.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        replace_marked_block(path, "demo-table", "| new |")
    assert path.read_bytes() == README.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    [(folder, written, target)] = swaps
    assert folder == tmp_path and target == path and "| new |" in written
