"""hcl._compat: old names of renamed keyword arguments and attributes still work, with a warning."""

from __future__ import annotations

import inspect
import warnings

import pytest

from hcl._compat import deprecated_attribute, renamed_kwargs


@renamed_kwargs(n_items="num_items")
def count(base: int, *, num_items: int = 1) -> int:
    return base + num_items


class Box:
    n_items = deprecated_attribute("n_items", "num_items")

    def __init__(self) -> None:
        self.num_items = 2


def test_the_old_keyword_is_passed_on_as_the_new_one_with_a_warning_at_the_caller() -> None:
    with pytest.warns(DeprecationWarning, match="count\\(\\): 'n_items' is deprecated, use 'num_items'") as record:
        assert count(10, n_items=5) == 15
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert count(10, num_items=5) == 15
        assert count(10) == 11


def test_both_names_at_once_is_an_error_and_the_signature_shows_the_new_name() -> None:
    with pytest.raises(TypeError, match="both 'num_items' and its deprecated name 'n_items'"):
        count(0, n_items=1, num_items=2)
    assert list(inspect.signature(count).parameters) == ["base", "num_items"]


def test_the_old_attribute_reads_and_writes_the_new_one_with_a_warning() -> None:
    box = Box()
    with pytest.warns(DeprecationWarning, match="'n_items' is deprecated, use 'num_items'") as record:
        assert box.n_items == 2
        box.n_items = 7
    assert box.num_items == 7
    assert all(w.filename == __file__ for w in record)
