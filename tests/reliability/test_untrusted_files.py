"""Untrusted files: code payloads are never run; damaged files give a clear error naming the file.

Every file the package reads from a user (checkpoints, pretrained weights, run directories,
configs, hierarchy JSON, parent maps, CIFAR pickles, embeddings, images) is tried with

* a code-execution payload (a pickle whose ``__reduce__`` calls ``exec``; a YAML python tag):
  each payload is first shown to be live (an unsafe loader runs it), then the package's loader
  must refuse it, naming the file, without running it;
* damage, fuzzed with hypothesis (truncation, bit flips, overwritten spans, random JSON): the
  loader returns exactly what was saved or raises ValueError/OSError naming the file; never a
  silently different value, never a KeyError/IndexError/UnicodeDecodeError from deep inside.
"""

from __future__ import annotations

import io
import json
import pickle
import string
import struct
import zlib
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
import yaml
from conftest import FAST
from hypothesis import HealthCheck, given, settings
from PIL import Image

from hcl import Hierarchy
from hcl.cli import main as cli_main
from hcl.data import HierarchicalImageFolder
from hcl.data.cifar import load_cifar_pickle
from hcl.data.files import open_image
from hcl.models import build_encoder, load_weights
from hcl.rundir import load_embeddings
from hcl.train import TrainConfig, fit, load_checkpoint, load_config, load_run, save_checkpoint

# HCL_FAST=1 (make test, CI) tries 100 damaged files per test, HCL_FAST=0 1000.
FUZZ = settings(max_examples=100 if FAST else 1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Payload:
    """Pickles to ``exec(code)`` that creates ``marker``: proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _encoder() -> torch.nn.Module:
    return build_encoder("compact_cnn", in_channels=3, width=4, embedding_dim=8)


def _state_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_state_equal, a, b))
    return a == b


def _named(error: BaseException, path: Path) -> bool:
    return str(path) in str(error)


# ----------------------------------------------------------------------------- code payloads


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """The payloads below do run code under unsafe loaders, so the refusals are meaningful."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    yaml.unsafe_load(_yaml_payload(marker))
    assert marker.exists()


def _yaml_payload(marker: Path) -> str:
    return f"lr: 0.1\nseed: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').close()\"]\n"


def _write_payload_checkpoint(path: Path, marker: Path, form: str) -> None:
    state = {"model": {"w": torch.zeros(2)}, "step": 1, "config": {}, "evil": Payload(marker)}
    if form == "torch-zip":
        torch.save(state, path)
    else:  # the legacy (non-zip) format: a bare pickle
        path.write_bytes(pickle.dumps(state, protocol=2))


def _run_dir_with_payload(tmp_path: Path, marker: Path, form: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(dataset="synthetic", output_dir=str(run), progress=False)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    _write_payload_checkpoint(run / "checkpoint.pt", marker, form)
    return run


@pytest.mark.parametrize("form", ["torch-zip", "legacy-pickle"])
@pytest.mark.parametrize("entry", ["load_checkpoint", "load_weights", "fit-resume", "load_run", "cli-evaluate"])
def test_a_checkpoint_payload_is_refused_and_never_run(
    tmp_path: Path, form: str, entry: str, capsys: pytest.CaptureFixture[str], cases
) -> None:
    marker = tmp_path / "ran"
    run = _run_dir_with_payload(tmp_path, marker, form)
    path = run / "checkpoint.pt"
    if entry == "cli-evaluate":
        assert cli_main(["evaluate", str(run)]) == 2
        message = capsys.readouterr().err
        assert str(path) in message
    else:
        calls = {
            "load_checkpoint": lambda: load_checkpoint(path),
            "load_weights": lambda: load_weights(_encoder(), path),
            "fit-resume": lambda: fit(TrainConfig(dataset="synthetic", output_dir=str(run)), resume=True),
            "load_run": lambda: load_run(run),
        }
        with pytest.raises(ValueError) as info:
            calls[entry]()
        assert _named(info.value, path), info.value
        message = str(info.value)
    # torch's own message advises weights_only=False (or allow-listing the object): never passed on.
    assert "refused" in message and "weights_only" not in message and "safe_globals" not in message, message
    assert not marker.exists(), "the checkpoint's code ran"
    cases.add("files.code_payload", "rejected")


@pytest.mark.parametrize(
    "state",
    [
        {"step": 3},
        {"step": 3, "config": "lr=1", "model": 5, "model_spec": [], "optimizer": {}, "scaler": {}, "rng": {}},
    ],
    ids=["missing-keys", "wrong-types"],
)
@pytest.mark.parametrize("entry", ["fit-resume", "load_run"])
def test_a_checkpoint_with_foreign_contents_is_named(tmp_path: Path, state: dict[str, Any], entry: str, cases) -> None:
    """A loadable file that is not an hcl training checkpoint (edited, or from another program)."""
    run = _run_dir_with_payload(tmp_path, tmp_path / "unused", "torch-zip")
    save_checkpoint(state, run / "checkpoint.pt")
    with pytest.raises(ValueError, match="checkpoint .*checkpoint.pt") as info:
        if entry == "fit-resume":
            fit(TrainConfig(dataset="synthetic", output_dir=str(run), progress=False), resume=True)
        else:
            load_run(run)
    assert _named(info.value, run / "checkpoint.pt"), info.value
    cases.add("files.foreign_checkpoint", "rejected")


@pytest.mark.parametrize("content", ["{not json", '{"lr": "fast"}', '{"no_such_key": 1}', "[]"])
def test_a_damaged_run_config_is_named(tmp_path: Path, content: str, cases) -> None:
    run = _run_dir_with_payload(tmp_path, tmp_path / "unused", "torch-zip")
    (run / "config.json").write_text(content)
    with pytest.raises((ValueError, TypeError)) as info:
        load_run(run)
    assert _named(info.value, run / "config.json"), info.value
    cases.add("files.run_config", "rejected")


def test_a_cifar_pickle_payload_is_refused_and_never_run(tmp_path: Path, cases) -> None:
    marker, path = tmp_path / "ran", tmp_path / "train"
    path.write_bytes(pickle.dumps({b"data": Payload(marker)}, protocol=2))
    with pytest.raises(ValueError, match="not a readable CIFAR pickle") as info:
        load_cifar_pickle(path)
    assert _named(info.value, path) and not marker.exists()
    cases.add("files.code_payload", "rejected")


def test_a_yaml_config_payload_is_refused_and_never_run(tmp_path: Path, cases) -> None:
    marker, path = tmp_path / "ran", tmp_path / "config.yaml"
    path.write_text(_yaml_payload(marker))
    with pytest.raises(ValueError, match="cannot parse config file") as info:
        load_config(path)
    assert _named(info.value, path) and not marker.exists()
    cases.add("files.code_payload", "rejected")


def test_an_embeddings_file_with_pickled_objects_is_refused_and_never_run(tmp_path: Path, cases) -> None:
    marker, run = tmp_path / "ran", tmp_path / "run"
    run.mkdir()
    hierarchy = Hierarchy.from_paths([("a", "x"), ("b", "y")])
    hierarchy.to_json(run / "hierarchy.json")
    objects = np.empty(1, dtype=object)
    objects[0] = Payload(marker)
    path = run / "embeddings_test.npz"
    np.savez(path, embeddings=objects, labels=np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError) as info:
        load_embeddings(run, "test")
    assert _named(info.value, path), info.value
    assert not marker.exists()
    cases.add("files.code_payload", "rejected")


# ----------------------------------------------------------------------------- damaged binaries

# A damage is ("truncate", keep), ("flip", position, bit) or ("overwrite", position, bytes), with
# positions as fractions of the file so that one strategy serves files of any size.
damages = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
)


def _damage(data: bytes, damage: tuple[Any, ...]) -> bytes:
    position = int(damage[1] * len(data))
    if damage[0] == "truncate":
        return data[:position]
    if damage[0] == "flip":
        out = bytearray(data)
        out[position] ^= 1 << damage[2]
        return bytes(out)
    return data[:position] + damage[2] + data[position + len(damage[2]) :]


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes]:
    """A realistic checkpoint: model, SGD state with momentum, step, config, RNG, hierarchy."""
    from hcl.train import capture_rng_state

    torch.manual_seed(0)
    model = _encoder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 12,
        "config": TrainConfig(dataset="synthetic").to_dict(),
        "rng": capture_rng_state(),
        "hierarchy": json.dumps(Hierarchy.from_paths([("a", "x"), ("b", "y")]).to_dict()),
    }
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(state, path)
    return load_checkpoint(path), path.read_bytes()


@FUZZ
@given(damage=damages)
def test_a_damaged_checkpoint_loads_unchanged_or_fails_naming_the_file(
    checkpoint_bytes: tuple[dict[str, Any], bytes], tmp_path_factory: pytest.TempPathFactory, damage, cases
) -> None:
    original, data = checkpoint_bytes
    path = tmp_path_factory.getbasetemp() / "damaged-checkpoint.pt"
    path.write_bytes(_damage(data, damage))
    try:
        state = load_checkpoint(path)
    except ValueError as error:
        assert _named(error, path), error
        cases.add("files.checkpoint_damage", "rejected")
        return
    # Damage outside what the loader reads (zip padding, comments) may leave the file usable,
    # but then every value must be exactly what was saved.
    assert _state_equal(state, original), f"{damage} loaded silently different values"
    cases.add("files.checkpoint_damage", "harmless")


@FUZZ
@given(damage=damages)
def test_damaged_pretrained_weights_load_unchanged_or_fail_naming_the_file(
    checkpoint_bytes: tuple[dict[str, Any], bytes], tmp_path_factory: pytest.TempPathFactory, damage, cases
) -> None:
    original, data = checkpoint_bytes
    path = tmp_path_factory.getbasetemp() / "damaged-weights.pt"
    path.write_bytes(_damage(data, damage))
    model = _encoder()
    try:
        load_weights(model, path, strict=True)
    except ValueError as error:
        assert _named(error, path), error
        cases.add("files.weights_damage", "rejected")
        return
    assert _state_equal(model.state_dict(), original["model"]), f"{damage} loaded silently different weights"
    cases.add("files.weights_damage", "harmless")


@FUZZ
@given(damage=damages)
def test_a_damaged_cifar_pickle_loads_unchanged_or_fails_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, damage, cases
) -> None:
    rng = np.random.default_rng(0)
    batch = {
        b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
        b"fine_labels": [1, 2, 3, 4],
        b"coarse_labels": [0, 0, 1, 1],
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }
    path = tmp_path_factory.getbasetemp() / "damaged-cifar"
    path.write_bytes(_damage(pickle.dumps(batch, protocol=2), damage))
    try:
        loaded = load_cifar_pickle(path)
    except ValueError as error:
        assert _named(error, path), error
        cases.add("files.cifar_damage", "rejected")
        return
    # A pickle has no checksum: a flipped byte inside the pixels or a name is undetectable here,
    # but the structure (keys and sizes) must be intact for the data set to accept it.
    assert isinstance(loaded, dict)
    cases.add("files.cifar_damage", "parsed")


@pytest.fixture(scope="module")
def embeddings_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A run directory holding an embeddings file as ``hcl embed`` writes it."""
    from hcl.train import save_embeddings

    run = tmp_path_factory.mktemp("embedded")
    hierarchy = Hierarchy.from_paths([("a", "x"), ("a", "y"), ("b", "z")])
    labels = hierarchy.encode([("a", "x"), ("a", "y"), ("b", "z"), ("b", "z")]).numpy()
    embeddings = np.random.default_rng(0).normal(size=(4, 5))
    save_embeddings(run / "embeddings_test.npz", embeddings, labels, hierarchy)
    return run, (run / "embeddings_test.npz").read_bytes()


@FUZZ
@given(damage=damages)
def test_a_damaged_embeddings_file_loads_unchanged_or_fails_naming_the_file(
    embeddings_run: tuple[Path, bytes], tmp_path_factory: pytest.TempPathFactory, damage, cases
) -> None:
    run, data = embeddings_run
    original = load_embeddings(run, "test")
    damaged_run = tmp_path_factory.getbasetemp() / "damaged-embeddings"
    damaged_run.mkdir(exist_ok=True)
    path = damaged_run / "embeddings_test.npz"
    path.write_bytes(_damage(data, damage))
    try:
        loaded = load_embeddings(damaged_run, "test")
    except ValueError as error:
        assert _named(error, path), error
        cases.add("files.embeddings_damage", "rejected")
        return
    assert np.array_equal(loaded.embeddings, original.embeddings) and np.array_equal(loaded.labels, original.labels)
    assert np.array_equal(loaded.indices, original.indices) and loaded.hierarchy == original.hierarchy
    cases.add("files.embeddings_damage", "harmless")


# ----------------------------------------------------------------------------- hierarchy JSON

names = st.text(alphabet=string.ascii_lowercase[:4], min_size=1, max_size=2)
trees = st.lists(st.lists(names, min_size=1, max_size=4).map(tuple), min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _hierarchy_or_skip(paths: list[tuple[str, ...]]) -> Hierarchy | None:
    try:
        return Hierarchy.from_paths(paths)
    except ValueError:
        return None  # two parents: not a tree (fuzzed in test_fuzz_hierarchy.py)


def _check_hierarchy_file(path: Path, cases, target: str, document: Any = None) -> None:
    try:
        loaded = Hierarchy.from_json(path)
    except ValueError as error:
        assert _named(error, path), error
        cases.add(target, "rejected")
        return
    # Whatever loads survives a round trip, and took every name from the file as written: a
    # null or a number where a name belongs is an error, not a node called "None" or "3".
    assert Hierarchy.from_dict(loaded.to_dict()) == loaded
    if document is not None:
        for level, entry in enumerate(document["levels"]):
            assert isinstance(entry["name"], str), f"level name {entry['name']!r} was accepted"
            for node in entry["nodes"]:
                assert isinstance(node, list) and len(node) == 2, f"node {node!r} was accepted"
                name, parent = node
                assert isinstance(name, str), f"node name {name!r} was accepted"
                assert isinstance(parent, str) or (parent is None and level == 0), f"parent {parent!r} was accepted"
    cases.add(target, "valid")


@FUZZ
@given(paths=trees, damage=damages)
def test_a_damaged_hierarchy_json_loads_or_fails_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, paths, damage, cases
) -> None:
    tree = _hierarchy_or_skip(paths)
    if tree is None:
        return
    path = tmp_path_factory.getbasetemp() / "damaged-hierarchy.json"
    tree.to_json(path)
    path.write_bytes(_damage(path.read_bytes(), damage))
    _check_hierarchy_file(path, cases, "files.hierarchy_json_bytes")


@FUZZ
@given(paths=trees, data=st.data())
def test_a_hierarchy_json_with_a_part_replaced_loads_or_fails_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, paths, data, cases
) -> None:
    tree = _hierarchy_or_skip(paths)
    if tree is None:
        return
    document: Any = tree.to_dict()
    # Walk to a random place in the document and replace what is there by a random JSON value.
    parent, key = None, None
    node = document
    for _ in range(data.draw(st.integers(0, 6))):
        if not isinstance(node, (dict, list)) or not node:
            break
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys))
        node = node[key]
    replacement = data.draw(json_values)
    if parent is None:
        document = replacement
    else:
        parent[key] = replacement
    path = tmp_path_factory.getbasetemp() / "edited-hierarchy.json"
    path.write_text(json.dumps(document))
    _check_hierarchy_file(path, cases, "files.hierarchy_json_structure", document)


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00 not text \x80", b"[" * 100_000 + b"]" * 100_000, b'{"format": "hcl.Hierarchy"}', b"null"],
    ids=["empty", "binary", "deeply-nested", "no-levels", "null"],
)
def test_garbage_hierarchy_files_fail_naming_the_file(tmp_path: Path, content: bytes, cases) -> None:
    path = tmp_path / "hierarchy.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        Hierarchy.from_json(path)
    assert _named(info.value, path), info.value
    cases.add("files.hierarchy_json_garbage", "rejected")


# ----------------------------------------------------------------------------- parent maps


@pytest.fixture(scope="module")
def flat_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flat class folders a, b, c, d with one tiny image each."""
    root = tmp_path_factory.mktemp("flat")
    for name in "abcd":
        (root / name).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name / "0.png")
    return root


def _object_text(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object written pair by pair, so that a key may repeat (json.dumps cannot do that)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"


parent_values = st.one_of(
    st.none(), st.sampled_from("abcdefg"), st.sampled_from("efg"), st.integers(0, 3), st.lists(st.just("a"), max_size=1)
)
# Every class folder a..d named once, then extra entries (other nodes, or a class again), shuffled.
parent_maps = st.tuples(
    st.lists(parent_values, min_size=4, max_size=4),
    st.lists(st.tuples(st.sampled_from("abcdefg"), parent_values), max_size=6),
).flatmap(lambda drawn: st.permutations(list(zip("abcd", drawn[0])) + drawn[1]))


@FUZZ
@given(pairs=parent_maps)
def test_a_parent_map_file_gives_the_tree_it_says_or_fails_naming_the_file(
    flat_classes: Path, tmp_path_factory: pytest.TempPathFactory, pairs, cases
) -> None:
    path = tmp_path_factory.getbasetemp() / "parents.json"
    path.write_text(_object_text(pairs))
    try:
        dataset = HierarchicalImageFolder(flat_classes, parent_map=path)
    except ValueError as error:
        assert _named(error, path), error
        cases.add("files.parent_map", "rejected")
        return
    # Accepted: each child named once, with a name (or null) as parent, and no cycle.
    parent = dict(pairs)
    for child, first in parent.items():
        assert all(p == first for c, p in pairs if c == child), f"{child!r} with two parents was accepted: {pairs}"
    assert all(p is None or isinstance(p, str) for p in parent.values()), f"a non-name parent was accepted: {pairs}"
    for node in parent:
        seen = [node]
        while parent.get(seen[-1]) is not None:
            assert parent[seen[-1]] not in seen, f"a cycle was accepted: {pairs}"
            seen.append(parent[seen[-1]])
    tree = dataset.hierarchy
    for label, file in zip(dataset.labels.tolist(), dataset.paths):
        known = [i for i in label if i >= 0]
        chain = [Path(file).parent.name]
        while parent.get(chain[-1]) is not None:
            chain.append(parent[chain[-1]])
        assert tree.path(len(known) - 1, known[-1]) == tuple(reversed(chain))
    cases.add("files.parent_map", "valid")


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"), ("x", "y"), ("y", "x")], "cycle"),
        ([("a", "a"), ("b", None), ("c", None), ("d", None)], "cycle"),
        ([("a", "x"), ("a", "y"), ("b", None), ("c", None), ("d", None), ("x", None), ("y", None)], "two parents"),
    ],
    ids=["cycle", "own-parent", "two-parents"],
)
def test_a_parent_map_with_a_cycle_or_two_parents_is_named(
    flat_classes: Path, tmp_path: Path, pairs: list[tuple[str, Any]], expected: str, cases
) -> None:
    path = tmp_path / "parents.json"
    path.write_text(_object_text(pairs))
    with pytest.raises(ValueError, match=expected) as info:
        HierarchicalImageFolder(flat_classes, parent_map=path)
    assert _named(info.value, path), info.value
    cases.add("files.parent_map", "rejected")


# ----------------------------------------------------------------------------- images


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 8))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def _encoded(image_format: str) -> bytes:
    pixels = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


CORRUPT_IMAGES = {
    "empty": b"",
    "text": b"this is not an image\n",
    "truncated-png": _encoded("PNG")[:300],
    "truncated-jpeg": _encoded("JPEG")[:400],
    "decompression-bomb": _png_header_only(30_000, 30_000),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_IMAGES))
def test_a_corrupt_image_fails_naming_the_file_and_index(tmp_path: Path, kind: str, cases) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "0.png")
    bad = tmp_path / "b" / "1.png"
    bad.write_bytes(CORRUPT_IMAGES[kind])
    dataset = HierarchicalImageFolder(tmp_path)
    index = dataset.paths.index(str(bad))
    dataset[1 - index if index < 2 else 0]  # the good images still load
    with pytest.raises(OSError, match=rf"image {index}\b") as info:
        dataset[index]
    assert _named(info.value, bad), info.value
    cases.add("files.corrupt_image", "rejected")


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the damage it then reports
@FUZZ
@given(image_format=st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"]), damage=damages)
def test_a_damaged_image_decodes_or_fails_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, image_format: str, damage, cases
) -> None:
    data = _encoded(image_format)
    path = tmp_path_factory.getbasetemp() / f"damaged.{image_format.lower()}"
    path.write_bytes(_damage(data, damage))
    try:
        image = open_image(path, 7)
    except OSError as error:
        assert _named(error, path) and "image 7" in str(error), error
        cases.add("files.image_damage", "rejected")
        return
    # Most image formats carry no checksum: a flipped pixel, or a header bit that changes the
    # size, decodes to a different but whole image, which no loader can tell from the original.
    width, height = image.size
    assert width > 0 and height > 0 and np.asarray(image.convert("RGB")).shape == (height, width, 3)
    cases.add("files.image_damage", "decoded")
