"""The rule that chooses a default from a study (hcl.study.choice) on a fabricated study.json: who
qualifies, who wins, that every number in its sentence is the JSON's, and its errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from study.helpers import fabricated_study

from hcl.cli import main
from hcl.study import choice_sentence, choose_variant, study_headline


@pytest.fixture
def study(tmp_path: Path) -> dict:
    return fabricated_study(tmp_path)


def with_copy(study: dict, source: str, name: str, *, embedding: str | None = None, **shifts: float) -> dict:
    """The study with variant ``name`` whose paired rows copy ``source``'s (``embedding``: copy
    them into that embedding instead); ``shifts``: metric -> amount added to mean and interval."""
    study = copy.deepcopy(study)
    study["config"]["variants"][name] = {}
    if embedding is not None and embedding not in study["config"]["embeddings"]:
        study["config"]["embeddings"].append(embedding)
    for row in [r for r in study["paired"] if r["variant"] == source]:
        new = {**row, "variant": name if embedding is None else row["variant"]}
        if embedding is not None:
            new["embedding"] = embedding
        key = "finest" if row["metric"] == "map@r" and row["level"] == "class" else row["metric"]
        for field in ("mean_diff", "ci_low", "ci_high"):
            new[field] += shifts.get(key, 0.0)
        study["paired"].append(new)
    return study


def test_a_variant_that_raises_cpcc_is_chosen_and_one_that_does_not_is_dropped(study: dict) -> None:
    choice = choose_variant(study, ["Deep", "Flat"])
    assert choice["chosen"] == "Deep" and choice["kept"] == ["Deep"] and choice["dropped"] == ["Flat"]
    cpcc = next(
        r for r in study["paired"] if r["variant"] == "Deep" and r["metric"] == "cpcc" and r["protocol"] == "all"
    )
    assert choice["rows"]["Deep"]["cpcc"]["features"]["mean_diff"] == cpcc["mean_diff"]
    text = choice_sentence(study, ["Deep", "Flat"])
    assert "**Deep** is chosen: CPCC " in text and "Not raising CPCC on every embedding: Flat." in text
    assert f"{cpcc['mean_diff']:+.3f} [{cpcc['ci_low']:+.3f}, {cpcc['ci_high']:+.3f}] (features)" in text


@pytest.mark.parametrize(("shift", "order"), [(-0.01, ["Deep", "Deeper"]), (0.01, ["Deeper", "Deep"])])
def test_of_the_qualifying_variants_the_smallest_finest_level_cost_wins(
    study: dict, shift: float, order: list[str]
) -> None:
    study = with_copy(study, "Deep", "Deeper", finest=shift)
    choice = choose_variant(study, ["Deep*"])
    assert choice["kept"] == order and choice["chosen"] == order[0]
    assert f"{order[1]} also qualifies but costs more" in choice_sentence(study, ["Deep*"])


def test_cpcc_must_rise_on_every_embedding(study: dict) -> None:
    # Deep on the projection: the same rows shifted so that the CPCC interval straddles 0.
    study = with_copy(study, "Deep", "Deep", embedding="projection", cpcc=-0.05)
    choice = choose_variant(study, ["Deep", "Flat"])
    assert choice["chosen"] is None and choice["kept"] == []
    assert "no candidate qualifies; none of Deep and Flat raises CPCC" in choice_sentence(study, ["Deep", "Flat"])


def test_patterns_never_count_the_baseline_and_must_match(study: dict) -> None:
    assert choose_variant(study, ["*"])["dropped"] == ["Flat"]
    with pytest.raises(ValueError, match=r"no variant of the study matches \['Nope\*'\] \(the baseline 'Base' never"):
        choose_variant(study, ["Nope*"])
    with pytest.raises(ValueError, match=r"the study has no protocol 'later'"):
        choose_variant(study, ["Deep"], protocol="later")


def test_the_headline_carries_the_choice_and_the_cli_needs_headline(study: dict, tmp_path: Path, capsys) -> None:
    assert "is chosen" not in study_headline(study)
    assert study_headline(study, choose_among=["Deep"]).endswith(choice_sentence(study, ["Deep"]))
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(study))
    assert main(["study-report", str(folder), "--headline", "--choose-among", "D*", "Flat"]) == 0
    assert capsys.readouterr().out == study_headline(study, choose_among=["D*", "Flat"])
    assert main(["study-report", str(folder), "--choose-among", "Deep"]) == 2
    assert "--choose-among goes with --headline" in capsys.readouterr().err
