"""The seam every task (classify, tags, detect) plugs into: what a run is asked, where it runs, what it gives.

A task owns how it gathers its training data from the store, fits, scores, evaluates and stores its outcome;
it describes itself as a `Task` (ml/<task>/__init__.py) and ml/tasks.py dispatches to it by method name,
with no special case. This module sits below the tasks: it imports none of them.

    Task(name, methods, train, evaluate)
      methods:  method name -> one line on what it does (the CLI's --method choices)
      train:    (conn, cache_dir, TrainRequest, *, device, progress, cancel) -> TrainResult | None
      evaluate: (conn, cache_dir, model row, split) -> dict  (the `evaluate --json` object)
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from artannot.errors import ArtAnnotError, Cancelled

if TYPE_CHECKING:  # torch loads only when a run starts
    from artannot.ml.device import Runtime
    from artannot.ml.features import FeatureCache

Progress = Callable[[int, int, str], None]


@dataclass
class TrainRequest:
    """What the curator asked for (CLI flags, the Train dialog, a training/ recipe)."""

    method: str
    backbone: str = "efficientnet_lite0"
    epochs: int | None = None
    then_svm: bool = False
    options: dict = field(default_factory=dict)
    augment: str | None = None  # "style[:K]": K stylized copies per training image (ml/style.py)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_id: int
    metrics: dict
    params: dict
    seconds: float
    method: str = "svm"


@dataclass
class Context:
    """Where a method runs: the project, its data (the task's own: TrainData for classify), the device,
    progress and cancel."""

    conn: sqlite3.Connection
    cache_dir: Path
    data: Any
    runtime: Runtime
    progress: Progress | None = None
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.perf_counter)
    clock: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Stop here if the curator cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("training cancelled")

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def feature_cache(self) -> FeatureCache:
        from artannot.ml.features import FeatureCache

        return FeatureCache(self.cache_dir / "features.sqlite")

    def imagenet_features(self, backbone: str, items: Sequence[tuple[str, str]] | None = None):
        """ImageNet penultimate features of every image (or of items), cached per (backbone, image hash)."""
        from artannot.ml.features import extract_features

        cache = self.feature_cache()
        try:
            return extract_features(self.data.items if items is None else items, backbone=backbone, cache=cache,
                                    runtime=self.runtime, progress=self.progress, cancel=self.cancel)
        finally:
            cache.close()

    def staged(self, prefix: str) -> Progress | None:
        """The progress callback with a prefix on its stage names."""
        if self.progress is None:
            return None
        return lambda done, total, stage: self.progress(done, total, f"{prefix}{stage}")

    def features(self, req: TrainRequest) -> tuple[np.ndarray, np.ndarray, dict, TrainRequest]:
        """ImageNet features of the backbone, or (option from_model=ID) those of a stored fine-tuned network:
        (features, readable mask, how to make them again, the request with the network's backbone)."""
        from artannot.ml.networks import load_network, model_network, network_features

        source = req.options.get("from_model")
        if source is None:
            feats, ok = self.imagenet_features(req.backbone)
            return feats, ok, {"backbone": req.backbone}, req
        path, source = model_network(self.conn, self.cache_dir, source)  # an id, or OTHER.artannot#ID
        model, meta = load_network(path)
        key = meta.get("run") or Path(path).stem
        cache = self.feature_cache()
        try:
            feats, ok = network_features(model, self.data.items, self.runtime, backbone=meta["backbone"],
                                         image_size=meta.get("image_size"), cache=cache, key=key,
                                         progress=self.progress, cancel=self.cancel)
        finally:
            cache.close()
        features = {"network": str(path), "key": key, "image_size": meta.get("image_size"),
                    "model": int(source) if source.isdigit() else source}
        return feats, ok, features, dataclasses.replace(req, backbone=meta["backbone"])


Train = Callable[..., "TrainResult | None"]
Evaluate = Callable[[sqlite3.Connection, Path, sqlite3.Row, "str | None"], dict]


@dataclass(frozen=True)
class Task:
    """One kind of model: its methods, how it trains and how a stored model of it is evaluated."""

    name: str
    methods: Mapping[str, str]
    train: Train
    evaluate: Evaluate


def jsonable(value):
    """numpy scalars and arrays, and paths, as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def parse_options(items: Sequence[str]) -> dict:
    """Method options from KEY=VALUE strings (`train --option`, the Train dialog's Options field); values
    are read as JSON when they can be (3, 1e-4, false, [1, 10]), else kept as text."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArtAnnotError(f"--option takes KEY=VALUE, not {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options
