"""Fixtures shared by the data tests: a WordNet database in the official format."""

from __future__ import annotations

from pathlib import Path

import pytest

# key: (lemmas, [(pointer symbol, target key)]); the first hypernym listed wins.
SYNSETS = {
    "entity": (["entity"], []),
    "physical": (["physical_entity"], [("@", "entity")]),
    "object": (["object", "physical_object"], [("@", "physical")]),
    "animal": (["animal", "beast"], [("@", "object"), ("~", "dog")]),
    "pet": (["pet"], [("@", "object")]),
    "dog": (["dog", "domestic_dog"], [("@", "animal"), ("@", "pet"), ("~", "beagle")]),
    "beagle": (["beagle"], [("@", "dog")]),
    "cat": (["cat"], [("@", "animal")]),
    "artifact": (["artifact"], [("@", "object")]),
    "scooter": (["motor_scooter", "scooter"], [("@", "artifact")]),
    "rex": (["Rex"], [("@i", "dog")]),
}


def write_wordnet(folder: Path) -> dict[str, str]:
    """Write data.noun in WordNet's format; returns key -> wnid."""

    def line(offsets: dict[str, int], key: str) -> str:
        lemmas, pointers = SYNSETS[key]
        words = " ".join(f"{w} 0" for w in lemmas)
        ptrs = "".join(f" {sym} {offsets[target]:08d} n 0000" for sym, target in pointers)
        return f"{offsets[key]:08d} 03 n {len(lemmas):02x} {words} {len(pointers):03d}{ptrs} | a fixture synset\n"

    header = "  1 fixture database in the WordNet 3.0 format\n  2 \n"
    offsets = dict.fromkeys(SYNSETS, 0)
    position = len(header)
    for key in SYNSETS:  # offsets have a fixed width, so line lengths do not depend on them
        offsets[key] = position
        position += len(line(offsets, key))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.noun").write_text(header + "".join(line(offsets, k) for k in SYNSETS))
    return {k: f"n{o:08d}" for k, o in offsets.items()}


@pytest.fixture
def fixture_wordnet(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A WordNet ``data.noun`` under tmp_path/wordnet, and its key -> wnid map."""
    folder = tmp_path / "wordnet"
    return folder, write_wordnet(folder)
