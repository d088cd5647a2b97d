"""The decode cache on real generated images: hits, misses on a changed image or decoder, the size budget,
pruning, damaged entries, concurrent writers, and the device-side augmentation that reads it."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artannot.data.images import load_image, sha256_file
from artannot.errors import ArtAnnotError
from artannot.ml.backbones import build_transform, get_spec
from artannot.ml.decode_cache import (
    DECODER_VERSION,
    DecodeCache,
    DeviceAugment,
    Normalizer,
    Recipe,
    eval_recipe,
    pad_collate,
    shrunk_recipe,
)

SPEC = get_spec("efficientnet_lite0")
EVAL = eval_recipe(SPEC)


def noise_image(path: Path, size=(300, 200), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_hit_serves_the_same_pixels_as_the_backbone_transform(tmp_path):
    img = noise_image(tmp_path / "a.png")
    sha = sha256_file(img)
    cache = DecodeCache(tmp_path / "cache")
    first = cache.load(str(img), sha, EVAL)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.entry_path(sha, EVAL).is_file()
    again = cache.load(str(img), sha, EVAL)
    assert (cache.hits, cache.misses) == (1, 1)
    assert first.shape == (SPEC.input_size, SPEC.input_size, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    # what the features see equals the PIL transform of the decoded file (normalized on the device instead)
    expected = build_transform(SPEC)(load_image(img))
    got = Normalizer(SPEC, torch.device("cpu"))(torch.from_numpy(np.array(again)).permute(2, 0, 1)[None])[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_changed_image_or_recipe_or_decoder_version_is_a_miss(tmp_path):
    img = noise_image(tmp_path / "a.png", seed=1)
    cache = DecodeCache(tmp_path / "cache")
    old_sha = sha256_file(img)
    old = np.array(cache.load(str(img), old_sha, EVAL))
    noise_image(img, seed=2)  # the file changes: import sees a new sha256
    new_sha = sha256_file(img)
    assert new_sha != old_sha
    assert cache.get(new_sha, EVAL) is None
    new = cache.load(str(img), new_sha, EVAL)
    assert not np.array_equal(new, old)
    assert cache.get(new_sha, Recipe("eval", SPEC.resize_size, SPEC.input_size, "nearest")) is None
    assert cache.get(new_sha, shrunk_recipe(300)) is None
    # an entry of another decoder version is never served, and cleanup deletes it
    stale = cache.root / f"v{DECODER_VERSION + 7}" / EVAL.tag / new_sha[:2] / f"{new_sha}.npy"
    stale.parent.mkdir(parents=True)
    np.save(stale, np.zeros((SPEC.input_size, SPEC.input_size, 3), dtype=np.uint8))
    assert np.array_equal(cache.get(new_sha, EVAL), new)
    cache.cleanup()
    assert not stale.exists() and cache.entry_path(new_sha, EVAL).is_file()


def test_damaged_entry_is_deleted_and_decoded_again(tmp_path):
    img = noise_image(tmp_path / "a.png", seed=3)
    sha = sha256_file(img)
    cache = DecodeCache(tmp_path / "cache")
    good = np.array(cache.load(str(img), sha, EVAL))
    path = cache.entry_path(sha, EVAL)
    path.write_bytes(path.read_bytes()[:200])  # truncated by a crash of something else
    assert cache.get(sha, EVAL) is None and not path.exists()
    np.save(path, np.zeros((10, 10, 3), dtype=np.uint8))  # wrong shape for the recipe
    assert cache.get(sha, EVAL) is None
    assert np.array_equal(cache.load(str(img), sha, EVAL), good)


def test_unreadable_image_raises_and_is_not_cached(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    cache = DecodeCache(tmp_path / "cache")
    with pytest.raises(ArtAnnotError):
        cache.load(str(bad), "0" * 64, EVAL)
    assert cache.size_bytes() == 0
    ok, shas = cache.warm([(str(bad), None), (str(noise_image(tmp_path / "g.png")), None)], EVAL)
    assert ok.tolist() == [False, True] and shas[1] == sha256_file(tmp_path / "g.png")


def _fill(cache: DecodeCache, n: int) -> list[str]:
    hashes = []
    for k in range(n):
        sha = f"{k:064x}"
        cache.put(sha, EVAL, np.full((SPEC.input_size, SPEC.input_size, 3), k, dtype=np.uint8))
        os.utime(cache.entry_path(sha, EVAL), (1_000_000 + k, 1_000_000 + k))  # oldest first by k
        hashes.append(sha)
    return hashes


def test_budget_deletes_least_recently_used_first(tmp_path):
    cache = DecodeCache(tmp_path / "cache", budget_mb=1024)
    hashes = _fill(cache, 10)
    entry = cache.entry_path(hashes[0], EVAL).stat().st_size
    assert cache.size_bytes() == 10 * entry
    assert cache.get(hashes[0], EVAL) is not None  # a hit makes the oldest entry the most recent
    removed = cache.cleanup(budget_bytes=5 * entry)
    assert removed == 6  # down to 90% of the budget: 4 entries
    kept = [h for h in hashes if cache.entry_path(h, EVAL).exists()]
    assert kept == [hashes[0], *hashes[7:]]
    assert cache.cleanup(budget_bytes=5 * entry) == 0


def test_writes_past_the_budget_clean_up_by_themselves(tmp_path):
    cache = DecodeCache(tmp_path / "cache", budget_mb=1)
    for k in range(20):  # 20 x 151 kB = 3 MB written into a 1 MB cache
        cache.put(f"{k:064x}", EVAL, np.zeros((SPEC.input_size, SPEC.input_size, 3), dtype=np.uint8))
    entry = cache.entry_path(f"{19:064x}", EVAL).stat().st_size
    assert cache.size_bytes() <= 1024 * 1024 + 8 * entry  # bounded (checked every 1 MB written)
    assert cache.get(f"{19:064x}", EVAL) is not None  # the newest survive
    assert cache.get(f"{0:064x}", EVAL) is None


def test_prune_removes_images_that_left_the_project(tmp_path):
    cache = DecodeCache(tmp_path / "cache")
    hashes = _fill(cache, 4)
    cache.put(hashes[1], shrunk_recipe(300), np.zeros((300, 400, 3), dtype=np.uint8))
    assert cache.prune({hashes[1], hashes[3]}) == 2
    assert [cache.get(h, EVAL) is not None for h in hashes] == [False, True, False, True]
    assert cache.get(hashes[1], shrunk_recipe(300)) is not None


def _writer(root: str, seed: int, rounds: int) -> None:
    cache = DecodeCache(root)
    for k in range(rounds):
        value = (seed * 50 + k) % 256
        cache.put("ab" * 32, EVAL, np.full((SPEC.input_size, SPEC.input_size, 3), value, dtype=np.uint8))


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path):
    root = str(tmp_path / "cache")
    # fork: the writers start at once with the modules already imported (they use numpy and files only)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_writer, args=(root, s, 40)) for s in range(3)]
    for p in procs:
        p.start()
    reader = DecodeCache(root)
    seen, misses_after_first = 0, 0
    while any(p.is_alive() for p in procs) or seen == 0:
        arr = reader.get("ab" * 32, EVAL)
        if arr is None and seen:
            misses_after_first += 1  # once written, an entry is always whole: replaced, never rewritten in place
        if arr is not None:
            a = np.array(arr)
            assert a.shape == (SPEC.input_size, SPEC.input_size, 3)
            assert (a == a.flat[0]).all()  # one writer's whole entry, never a mix or a torn file
            seen += 1
        time.sleep(0.002)  # leave the writers the CPU
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert misses_after_first == 0
    assert not list(Path(root).rglob("*.tmp"))  # every temporary file was renamed into place


def test_device_augment_crops_flips_and_normalizes(tmp_path):
    rng = random.Random(0)
    arrays = [np.random.default_rng(k).integers(0, 256, (rng.randint(80, 120), rng.randint(80, 160), 3),
                                                 dtype=np.uint8) for k in range(4)]
    x, sizes, targets, ok = pad_collate([(a, torch.tensor(k), True) for k, a in enumerate(arrays)])
    assert x.shape == (4, 3, max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays))
    assert sizes.tolist() == [list(a.shape[:2]) for a in arrays] and targets.tolist() == [0, 1, 2, 3]
    spec = dataclasses.replace(SPEC, input_size=64)
    out = DeviceAugment(spec, torch.device("cpu"), seed=1)(x, sizes)
    assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5  # Lite0 normalizes to [-1, 1]
    again = DeviceAugment(spec, torch.device("cpu"), seed=1)(x, sizes)
    assert torch.equal(out, again)  # one seed, one augmentation
    # the whole image (scale 1, square): the output is the resized image or its mirror
    square = np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    xs, ss, _, _ = pad_collate([(square, torch.tensor(0), True)] * 6)
    got = DeviceAugment(spec, torch.device("cpu"), seed=2, scale=(1.0, 1.0))(xs, ss)
    plain = Normalizer(spec, torch.device("cpu"))(xs[:1])
    flips = [bool(torch.allclose(g, plain[0].flip(2), atol=1e-4)) for g in got]
    same = [bool(torch.allclose(g, plain[0], atol=1e-4)) for g in got]
    assert all(a or b for a, b in zip(flips, same, strict=True)) and any(flips) and any(same)


def test_prune_project_keeps_the_entries_of_the_projects_images(tmp_path):
    from artannot.ml.decode_cache import decode_cache_for, prune_project
    from artannot.project import Project

    (tmp_path / "img" / "a").mkdir(parents=True)
    files = [noise_image(tmp_path / "img" / "a" / f"{k}.png", seed=10 + k) for k in range(2)]
    with Project.create(tmp_path / "p.artannot") as p:
        p.import_folder(tmp_path / "img", labels_from="folder", split="train")
        cache = decode_cache_for(p.cache_dir)
        for f in files:
            cache.load(str(f), sha256_file(f), EVAL)
        cache.put("f" * 64, EVAL, np.zeros((SPEC.input_size, SPEC.input_size, 3), dtype=np.uint8))
        assert prune_project(p.conn, p.cache_dir) == 1
        assert all(cache.get(sha256_file(f), EVAL) is not None for f in files)
        assert cache.get("f" * 64, EVAL) is None
