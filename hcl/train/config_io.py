"""A training config as a plain mapping: read from a YAML or JSON file, changed by ``--set``
overrides, written back, and with renamed keys under their current names.

:mod:`hcl.train.config` checks the mapping as a :class:`~hcl.train.TrainConfig`; this module knows
nothing of the fields beyond the types it is handed.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hcl.atomic import write_text_atomic

__all__ = ["RENAMED_KEYS", "override_mapping", "read_config_file", "upgrade_keys", "write_config_file"]

# Old config key -> its current name. Old YAML files, --set and saved run folders still use them.
RENAMED_KEYS = {"n_views": "num_views"}


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
            data["data_options"] = {**data["data_options"], key.split(".", 1)[1]: yaml.safe_load(text)}
            continue
        name = RENAMED_KEYS.get(key, key)
        if name not in field_types:
            close = difflib.get_close_matches(key, list(field_types), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint}")
        if _accepts_str(field_types[name]) and text.strip() not in ("null", "~", ""):
            changes[key] = text
        else:
            try:
                changes[key] = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(f"cannot parse the value of config key {key!r}: {text!r} ({error})") from error
    return {**data, **upgrade_keys(changes)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file; empty -> ``{}``.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError: the file cannot be parsed or holds no mapping (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot parse config file {path}: {error}") from error
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
