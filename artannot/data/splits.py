"""Deterministic stratified train/test splits that do not depend on import order."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping


def stratified_split(
    labels: Mapping[int, object], keys: Mapping[int, str], *, test_fraction: float = 0.2, seed: str = "artannot"
) -> dict[int, str]:
    """Assign 'train' or 'test' to each image id, about test_fraction of each class to test.

    Order inside a class comes from a hash of the image's content key, so the same images always land in
    the same split whatever order they were imported in. Classes with a single image go to train.
    """
    by_class: dict[object, list[int]] = defaultdict(list)
    for image_id, label in labels.items():
        by_class[label].append(image_id)
    out: dict[int, str] = {}
    for members in by_class.values():
        members.sort(key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest())
        n_test = int(round(len(members) * test_fraction)) if len(members) > 1 else 0
        for pos, image_id in enumerate(members):
            out[image_id] = "test" if pos < n_test else "train"
    return out
