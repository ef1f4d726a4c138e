"""A training config as a plain mapping: read from a YAML or JSON file, changed by ``--set``
overrides, written back, and with renamed keys under their current names.

Config YAML (training and study configs, ``--set`` values) is read by :func:`parse_yaml`: YAML
1.1 as PyYAML reads it, except that ``1e-3`` is a float (YAML 1.1 makes it a string) and a key
given twice in one mapping is an error naming the key and its line (YAML 1.1 keeps the last).

:mod:`hcl.train.config` checks the mapping as a :class:`~hcl.train.TrainConfig`; this module knows
nothing of the fields beyond the types it is handed.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hcl.atomic import write_text_atomic

__all__ = [
    "RENAMED_KEYS",
    "describe_yaml_error",
    "override_mapping",
    "parse_yaml",
    "read_config_file",
    "read_config_text",
    "upgrade_keys",
    "write_config_file",
]

# Old config key -> its current name. Old YAML files, --set and saved run folders still use them.
RENAMED_KEYS = {"n_views": "num_views"}


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with exponent floats (``1e-3``) and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first})", key_node.start_mark
                )
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's floats without a dot or a signed exponent (1e-3, 2E5, 1.0e3), strings in YAML 1.1.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """The value in YAML ``text`` (see the module docstring); ``source`` names it in errors.

    Raises:
        yaml.YAMLError: unparsable text or a duplicated key, with ``source`` and the line.
    """
    try:
        loader = _ConfigLoader(text)
    except yaml.reader.ReaderError as error:  # a control character: checked before parsing
        error.name = source
        raise
    loader.name = source  # the marks of error messages name the file instead of "<unicode string>"
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """``error`` in one line: ``<source>:<line>:<column>: <problem>`` when PyYAML marked where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: {problem}"


def read_config_text(path: str | Path, what: str = "config file") -> str:
    """The UTF-8 text of the config file ``path``.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError: the file is not UTF-8 text, e.g. binary or UTF-16 (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _json_object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} is given twice")
        data[key] = value
    return data


def upgrade_keys(data: Mapping[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """A copy of ``data`` with every renamed key (:data:`RENAMED_KEYS`) under its current name.

    Args:
        data: config keys to values.
        warn: issue a ``FutureWarning`` per old key (off for files hcl wrote itself, such as a
            run folder's ``config.json``). Not a ``DeprecationWarning``: that one is hidden by
            default outside tests, and a config key is written by the user, not by library code.

    Raises:
        ValueError: both a key and its old name are given (naming both).
    """
    upgraded = dict(data)
    for old, new in RENAMED_KEYS.items():
        if old not in upgraded:
            continue
        if new in upgraded:
            raise ValueError(f"config keys {new!r} and {old!r} (its deprecated name) are both given; keep only {new!r}")
        if warn:
            warnings.warn(f"config key {old!r} is deprecated, use {new!r}", FutureWarning, stacklevel=3)
        upgraded[new] = upgraded.pop(old)
    return upgraded


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)


def override_mapping(
    data: Mapping[str, Any], overrides: Iterable[str], field_types: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``data`` with ``key=value`` overrides applied (see :func:`hcl.train.apply_overrides`).

    Args:
        data: the config as a mapping.
        overrides: ``key=value`` strings, applied in order.
        field_types: each config key's type annotation: a key not in it is unknown, and a key
            whose type takes a string keeps the text as written.

    Raises:
        ValueError: an override without ``=``, an unknown key (named), an unparsable value, or a
            key given under both its names.
    """
    data = dict(data)
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"an override must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("data_options."):
            data["data_options"] = {**data["data_options"], key.split(".", 1)[1]: _parse_value(key, text)}
            continue
        name = RENAMED_KEYS.get(key, key)
        if name not in field_types:
            close = difflib.get_close_matches(key, list(field_types), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint}")
        if _accepts_str(field_types[name]) and text.strip() not in ("null", "~", ""):
            changes[key] = text
        else:
            changes[key] = _parse_value(key, text)
    return {**data, **upgrade_keys(changes)}


def _parse_value(key: str, text: str) -> Any:
    try:
        return parse_yaml(text, f"--set {key}")
    except yaml.YAMLError as error:
        raise ValueError(
            f"cannot parse the value of config key {key!r}: {text!r} ({describe_yaml_error(error)})"
        ) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file; empty -> ``{}``.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError: the file is not UTF-8 text, cannot be parsed, gives a key twice or holds no
            mapping (named).
    """
    path = Path(path)
    text = read_config_text(path)
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_object_without_duplicates)
        else:
            data = parse_yaml(text, str(path))
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"cannot parse config file {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"cannot parse config file {path}: {describe_yaml_error(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return dict(data)


def write_config_file(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``data`` as JSON (``.json``) or YAML (any other suffix), atomically; returns the path."""
    path = Path(path)
    if path.suffix == ".json":
        return write_text_atomic(path, json.dumps(dict(data), indent=2) + "\n")
    return write_text_atomic(path, yaml.safe_dump(dict(data), sort_keys=False))
