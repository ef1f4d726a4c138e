"""WordNet hypernym paths from a fixture ``data.noun`` with real byte offsets, and from Debian's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcl.data import wordnet_available, wordnet_paths
from hcl.data.wordnet import WordNet


def test_synsets_chains_and_lemmas(fixture_wordnet: tuple[Path, dict[str, str]]) -> None:
    folder, wnid = fixture_wordnet
    wn = WordNet(folder)
    assert wn.lemma(wnid["dog"]) == "dog"
    assert wn.synset(wnid["scooter"])[0] == ["motor_scooter", "scooter"]
    chain = wn.hypernym_chain(wnid["beagle"])
    assert [wn.lemma(w) for w in chain] == ["entity", "physical_entity", "object", "animal", "dog", "beagle"]
    # An instance hypernym (@i) is followed when there is no ordinary one.
    assert [wn.lemma(w) for w in wn.hypernym_chain(wnid["rex"])][-2:] == ["dog", "Rex"]


def test_paths_drop_shared_levels_and_cut_to_depth(fixture_wordnet: tuple[Path, dict[str, str]]) -> None:
    folder, wnid = fixture_wordnet
    classes = [wnid["beagle"], wnid["cat"], wnid["scooter"]]
    full = wordnet_paths(classes, root=folder)
    assert full == [
        (wnid["animal"], wnid["dog"], wnid["beagle"]),
        (wnid["animal"], wnid["cat"]),
        (wnid["artifact"], wnid["scooter"]),
    ]
    cut = wordnet_paths(classes, depth=2, root=folder)
    assert cut == [(wnid["animal"], wnid["beagle"]), (wnid["animal"], wnid["cat"]), (wnid["artifact"], wnid["scooter"])]
    assert wordnet_paths([wnid["dog"]], root=folder) == [(wnid["dog"],)]
    assert wordnet_paths([wnid["dog"]], depth=1, root=folder) == [(wnid["dog"],)]


def test_bad_ids_and_missing_database(fixture_wordnet: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, wnid = fixture_wordnet
    wn = WordNet(folder)
    with pytest.raises(ValueError, match="not a WordNet noun id"):
        wn.synset("dog")
    with pytest.raises(ValueError, match="unknown synset"):
        wn.synset("n00000003")
    with pytest.raises(ValueError, match="unknown synset"):
        wn.synset("n99999999")
    with pytest.raises(ValueError, match="depth"):
        wordnet_paths([wnid["dog"]], depth=0, root=folder)
    with pytest.raises(FileNotFoundError, match="data.noun"):
        WordNet(tmp_path / "nowhere")
    assert wordnet_available(folder) and not wordnet_available(tmp_path / "nowhere")


@pytest.mark.skipif(not wordnet_available(), reason="Debian's wordnet-base is not installed")
def test_real_wordnet_imagenet_ids() -> None:
    wn = WordNet()
    chain = [wn.lemma(w) for w in wn.hypernym_chain("n02084071")]  # ImageNet's dog synset
    assert chain[0] == "entity" and chain[-2:] == ["canine", "dog"]
    paths = wordnet_paths(["n02085620", "n02121808", "n03791053"], depth=4)  # Chihuahua, cat, scooter
    assert all(1 <= len(p) <= 4 for p in paths)
    assert paths[0][0] == paths[1][0] != paths[2][0]  # living things vs artifacts
