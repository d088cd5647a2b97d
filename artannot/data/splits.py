"""Deterministic stratified train/val/test splits that do not depend on import order, and split edits."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence

from artannot.errors import ArtAnnotError
from artannot.store.db import write

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: Mapping[int, object],
    keys: Mapping[int, str],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: str = "artannot",
) -> dict[int, str]:
    """Assign 'train', 'val' or 'test' to each image id, about those fractions of each class.

    Order inside a class comes from a hash of the image's content key, so the same images always land in
    the same split whatever order they were imported in. Every class keeps at least one training image;
    classes with a single image go to train.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ArtAnnotError(f"split fractions test={test_fraction} val={val_fraction} must be >= 0 and leave"
                            " some images for training")
    by_class: dict[object, list[int]] = defaultdict(list)
    for image_id, label in labels.items():
        by_class[label].append(image_id)
    out: dict[int, str] = {}
    for members in by_class.values():
        members.sort(key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest())
        n = len(members)
        n_test = int(round(n * test_fraction)) if n > 1 else 0
        n_val = int(round(n * val_fraction)) if n > 1 else 0
        while n_test + n_val > n - 1:  # keep one image to train on
            if n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        for pos, image_id in enumerate(members):
            out[image_id] = "test" if pos < n_test else "val" if pos < n_test + n_val else "train"
    return out


def set_split(conn: sqlite3.Connection, image_ids: Sequence[int], split: str) -> int:
    """Put these images in train, val or test, committed at once; returns how many changed."""
    if split not in SPLITS:
        raise ArtAnnotError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    ids = list(dict.fromkeys(image_ids))
    changed = 0
    with write(conn):
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cur = conn.execute(
                f"UPDATE images SET split = ? WHERE id IN ({marks}) AND split IS NOT ?", [split, *chunk, split])
            changed += cur.rowcount
    return changed


def resplit(conn: sqlite3.Connection, test: float = 0.2, val: float = 0.0) -> dict[str, int]:
    """Re-draw every image's split: stratified by current label, deterministic; unlabelled go to train.

    Returns how many images each split holds afterwards.
    """
    rows = conn.execute(
        "SELECT i.id, i.sha256, l.class_id FROM images i"
        " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1"
    ).fetchall()
    labelled = {r[0]: r[2] for r in rows if r[2] is not None}
    assignment = stratified_split(labelled, {r[0]: r[1] for r in rows},
                                  test_fraction=test, val_fraction=val)
    assignment.update({r[0]: "train" for r in rows if r[0] not in labelled})
    with write(conn):
        conn.executemany("UPDATE images SET split = ? WHERE id = ?", [(s, i) for i, s in assignment.items()])
    counts = dict.fromkeys(SPLITS, 0)
    for s in assignment.values():
        counts[s] += 1
    return counts
