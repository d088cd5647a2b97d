"""Zero-training baseline (Lagunas & Garces): the ImageNet classifier, its classes mapped to the collection's.

A mapping file says which ImageNet categories stand for each class of the project, as JSON
(`{"fish": ["goldfish", "tench", 391]}`) or as CSV lines `class,imagenet category` (repeat a class for
several categories). Categories are torchvision's English names (case-insensitive) or indices 0-999. A
class's score is the ImageNet probability mass of its categories, renormalised over the project's classes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from artannot.errors import ModelError
from artannot.ml.backbones import imagenet_categories


def read_mapping(path: str | Path) -> dict[str, list[int | str]]:
    """Class name -> ImageNet categories (names or indices) from a JSON or CSV mapping file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ModelError(f"cannot read the mapping file {path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"mapping file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        mapping: dict[str, list] = {}
        for name, value in raw.items():
            mapping[str(name)] = list(value) if isinstance(value, list) else [value]
        return mapping
    mapping = {}
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise ModelError(f"mapping file {path} line {n}: expected `class,imagenet category`")
        mapping.setdefault(row[0].strip(), []).extend(c.strip() for c in row[1:] if c.strip())
    return mapping


def resolve_mapping(mapping: Mapping[str, list], class_names: Mapping[int, str]) -> dict[int, list[int]]:
    """Project class id -> ImageNet indices; unknown classes or categories are errors, with a hint."""
    categories = imagenet_categories()
    by_name = {c.lower(): k for k, c in enumerate(categories)}
    id_of = {name: cid for cid, name in class_names.items()}
    out: dict[int, list[int]] = {}
    for name, cats in mapping.items():
        if name not in id_of:
            raise ModelError(f"the mapping names class {name!r}, which this project does not have")
        idx = []
        for cat in cats:
            if isinstance(cat, int) or (isinstance(cat, str) and cat.isdigit()):
                k = int(cat)
                if not 0 <= k < len(categories):
                    raise ModelError(f"ImageNet index {k} for {name!r} is outside 0-999")
            else:
                k = by_name.get(str(cat).lower(), -1)
                if k < 0:
                    close = [c for c in categories if str(cat).lower() in c.lower()][:3]
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    raise ModelError(f"{cat!r} (for {name!r}) is not an ImageNet category name{hint}")
            idx.append(k)
        out[id_of[name]] = sorted(set(idx))
    if not out:
        raise ModelError("the mapping file maps no class")
    return out


def mapped_scores(imagenet_proba: np.ndarray, mapping: Mapping[int, list[int]],
                  class_ids: list[int]) -> np.ndarray:
    """Per-class scores: the ImageNet probability of each class's categories, renormalised to sum to one."""
    scores = np.zeros((len(imagenet_proba), len(class_ids)))
    for k, cid in enumerate(class_ids):
        cats = mapping.get(cid, [])
        if cats:
            scores[:, k] = imagenet_proba[:, cats].sum(1)
    total = scores.sum(1, keepdims=True)
    return np.divide(scores, total, out=np.full_like(scores, 1.0 / len(class_ids)), where=total > 0)
