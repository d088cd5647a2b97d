"""A project on disk and its use cases: import, relabel, train, evaluate, predict, export."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from artannot.errors import ArtAnnotError, ModelError, ProjectError
from artannot.store import labels as label_store
from artannot.store import repo
from artannot.store.db import connect

Progress = Callable[[int, int, str], None]
SUFFIX = ".artannot"
METHODS = ("svm",)


class Project:
    """One open project file, used from one thread (open another Project per thread)."""

    def __init__(self, path: str | Path, *, create: bool = False):
        self.path = Path(path).expanduser().resolve()
        if create and self.path.suffix != SUFFIX:
            raise ProjectError(f"project files end in {SUFFIX}: try {self.path.with_suffix(SUFFIX).name}")
        self.conn = connect(self.path, create=create)
        self.cache_dir = self.path.with_name(self.path.name + ".d")
        self.cache_dir.mkdir(exist_ok=True)

    @classmethod
    def create(cls, path: str | Path) -> Project:
        """Make a new, empty project file."""
        return cls(path, create=True)

    def close(self) -> None:
        """Close this thread's connection."""
        self.conn.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- import -----------------------------------------------------------------------------------
    def import_folder(self, src: str | Path, *, labels_from: str = "folder", split: str = "auto",
                      vocabulary: str | Path | None = None, progress: Progress | None = None,
                      cancel: threading.Event | None = None):
        """Add a folder's images with labels from folder names, file names, or none."""
        from artannot.data.importer import import_folder
        from artannot.data.rules import Vocabulary

        vocab = Vocabulary.from_file(vocabulary) if vocabulary else None
        if vocab is not None:
            repo.ensure_classes(self.conn, vocab.classes)
        return import_folder(self.conn, src, labels_from=labels_from, vocabulary=vocab, split=split,
                             progress=progress, cancel=cancel)

    # ---- labels -----------------------------------------------------------------------------------
    def classes(self) -> list[repo.ClassInfo]:
        """Classes with counts, in display order."""
        return repo.list_classes(self.conn)

    def class_id(self, name: str) -> int:
        """The id of a class by name, created if new."""
        return repo.ensure_classes(self.conn, [name])[name]

    def images(self) -> list[repo.ImageRow]:
        """All images with labels and the latest model's top guess."""
        return repo.list_images(self.conn)

    def set_label(self, image_ids: Sequence[int], class_id: int | None) -> int | None:
        """A curator's edit, committed at once with its history."""
        return label_store.set_label(self.conn, image_ids, class_id, source="human")

    def undo(self) -> label_store.Event | None:
        """Undo the last edit."""
        return label_store.undo(self.conn)

    def redo(self) -> label_store.Event | None:
        """Redo the last undone edit."""
        return label_store.redo(self.conn)

    def history(self, image_id: int):
        """Every label an image has had."""
        return label_store.label_history(self.conn, image_id)

    # ---- models -----------------------------------------------------------------------------------
    @property
    def feature_cache_path(self) -> Path:
        return self.cache_dir / "features.sqlite"

    def latest_model_id(self) -> int | None:
        """The newest model, the one the grid shows."""
        return repo.latest_model_id(self.conn)

    def _model(self, model_id: int | None):
        model_id = model_id if model_id is not None else self.latest_model_id()
        if model_id is None:
            raise ModelError("no trained model yet: run `artannot train` (or Train in the app) first")
        row = repo.get_model(self.conn, model_id)
        if row is None:
            raise ModelError(f"no model with id {model_id} in this project")
        return row

    def train(self, *, method: str = "svm", backbone: str = "efficientnet_lite0", device: str = "auto",
              epochs: int | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None):
        """Train on the labelled train split, store the model, predict every image, evaluate on test."""
        from artannot.ml.training import train_features_svm

        if method not in METHODS:
            raise ModelError(f"--method {method} is not available yet; choose one of: {', '.join(METHODS)}")
        return train_features_svm(self.conn, self.cache_dir, backbone=backbone, device=device, progress=progress, cancel=cancel)

    def evaluate(self, model_id: int | None = None, split: str | None = "test") -> dict:
        """Top-1/top-5, per class and confusion of a model's stored predictions on a split."""
        from artannot.ml.metrics import evaluate_ranked

        row = self._model(model_id)
        class_ids = json.loads(row["classes"])
        truth = {i: c for i, _, _, c in repo.labelled_images(self.conn, split, label_store.TRAINABLE_SOURCES)}
        if not truth:
            raise ModelError(f"no labelled images in the {split} split to evaluate on")
        ranked = repo.predictions_by_image(self.conn, row["id"])
        result = evaluate_ranked(truth, ranked, class_ids, repo.class_names(self.conn))
        result["model"] = row["id"]
        result["split"] = split
        return result

    def predict_files(self, paths: Sequence[str | Path], *, model_id: int | None = None, top: int = 5,
                      progress: Progress | None = None, cancel: threading.Event | None = None
                      ) -> list[tuple[str, list[tuple[str, float]]]]:
        """Top-k (class, score) of image files that need not be in the project."""
        from artannot.data.images import sha256_file
        from artannot.ml.classifiers import SVMClassifier
        from artannot.ml.features import FeatureCache, extract_features

        row = self._model(model_id)
        clf = SVMClassifier.load(row["checkpoint"])
        items = []
        for p in paths:
            try:
                items.append((str(p), sha256_file(p)))
            except OSError as exc:
                raise ArtAnnotError(f"cannot read {p}: {exc.strerror or exc}") from None
        cache = FeatureCache(self.feature_cache_path)
        try:
            feats, ok = extract_features(items, backbone=row["backbone"], cache=cache, progress=progress,
                                         cancel=cancel)
        finally:
            cache.close()
        names = repo.class_names(self.conn)
        proba = clf.predict_proba(feats)
        out = []
        for (path, _), p, good in zip(items, proba, ok, strict=False):
            order = np.argsort(-p)[:top] if good else []
            out.append((path, [(names[int(clf.classes_[k])], float(p[k])) for k in order]))
        return out

    # ---- export -----------------------------------------------------------------------------------
    def export(self, out: str | Path, fmt: str, *, progress: Progress | None = None) -> int:
        """Write the curated set or predictions in a format other tools read; returns rows written."""
        from artannot.data.export import export

        return export(self.conn, Path(out).expanduser(), fmt, progress=progress)
