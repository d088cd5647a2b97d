"""A project on disk and its use cases: import, relabel, train, evaluate, predict, export."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from artannot.errors import ArtAnnotError, ModelError, ProjectError
from artannot.ml import tasks
from artannot.store import labels as label_store
from artannot.store import repo
from artannot.store import tags as tag_store
from artannot.store.db import Checkpointer, connect
from artannot.store.lock import ProjectLock
from artannot.store.models import model_task

Progress = Callable[[int, int, str], None]
log = logging.getLogger(__name__)
SUFFIX = ".artannot"
METHODS = tuple(tasks.methods())  # every task's methods: classify, tags, detect (ml/tasks.py)


class Project:
    """One open project file, used from one thread (open another Project per thread)."""

    def __init__(self, path: str | Path, *, create: bool = False, exclusive: bool = False):
        """Open (or create) a project; exclusive=True, for the app window, refuses a second app on it and
        moves the write-ahead log's checkpoints off its commits (store/db.py Checkpointer).

        Other processes (the CLI, scripts) may use the project at the same time: see store/lock.py.
        """
        self.path = Path(path).expanduser().resolve()
        if create and self.path.suffix != SUFFIX:
            raise ProjectError(f"project files end in {SUFFIX}: try {self.path.with_suffix(SUFFIX).name}")
        self._lock: ProjectLock | None = None
        self._checkpointer: Checkpointer | None = None
        conn = None
        try:
            if exclusive and not create and self.path.exists():
                self._lock = ProjectLock(self.path)  # before any upgrade: the other window may be older
            conn = connect(self.path, create=create)
            if exclusive and self._lock is None:
                self._lock = ProjectLock(self.path)
            self.cache_dir = self.path.with_name(self.path.name + ".d")
            self.cache_dir.mkdir(exist_ok=True)
            if not create:
                self._clean_model_folder(conn)
            if exclusive:
                self._checkpointer = Checkpointer(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            if self._lock is not None:
                self._lock.release()
            raise
        self.conn = conn

    def _clean_model_folder(self, conn) -> None:
        """Delete model files that no model names (left by killed or failed runs), an hour old or more."""
        import sqlite3

        from artannot.store.model_files import remove_orphan_model_files

        try:
            removed = remove_orphan_model_files(conn, self.cache_dir)
        except (OSError, sqlite3.Error):  # housekeeping never stops a project from opening
            return
        if removed:
            log.info("removed %d model file%s of interrupted or failed runs from %s", removed,
                     "" if removed == 1 else "s", self.cache_dir / "models")

    @classmethod
    def create(cls, path: str | Path) -> Project:
        """Make a new, empty project file."""
        return cls(path, create=True)

    def close(self) -> None:
        """Close this thread's connection (and let another app window open the project)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- import -----------------------------------------------------------------------------------
    def import_folder(self, src: str | Path, *, labels_from: str = "folder", split: str = "auto",
                      vocabulary: str | Path | None = None, progress: Progress | None = None,
                      cancel: threading.Event | None = None, unlabelled_folders: Sequence[str] = (),
                      thumbnails: bool = True):
        """Add a folder's images with labels from folder names, file names, none, or a label file
        (`csv:FILE`, `coco:FILE`, `voc:DIR`, `yolo:DIR`, `labelme:DIR`: labels, boxes and splits);
        thumbnails: make each new image's grid thumbnail now, in the probing threads."""
        from artannot.data.formats import READERS, iter_annotations
        from artannot.data.importer import import_annotations, import_folder
        from artannot.data.rules import Vocabulary

        vocab = Vocabulary.from_file(vocabulary) if vocabulary else None
        thumbs = self.cache_dir / "thumbs" if thumbnails else None
        kind, _, arg = labels_from.partition(":")
        if kind in READERS:
            if not arg:
                what = "FILE" if kind in ("csv", "coco") else "DIR"
                raise ArtAnnotError(f"--labels-from {kind} needs its label file: {kind}:{what}")
            if not Path(src).expanduser().is_dir():
                raise ArtAnnotError(f"{src} is not a folder of images")
            annotations = iter_annotations(kind, arg, src)  # consumed whole before the first write
            return import_annotations(self.conn, src, annotations, vocabulary=vocab, split=split,
                                      description=f"labels from {kind} {Path(arg).name}", progress=progress,
                                      cancel=cancel, thumbnails=thumbs)
        if vocab is not None:
            repo.ensure_classes(self.conn, vocab.classes)
        return import_folder(self.conn, src, labels_from=labels_from, vocabulary=vocab, split=split,
                             progress=progress, cancel=cancel, unlabelled_folders=unlabelled_folders,
                             thumbnails=thumbs)

    def set_split(self, image_ids: Sequence[int], split: str) -> int:
        """Move images to train, val or test (committed at once); returns how many changed."""
        from artannot.data.splits import set_split

        return set_split(self.conn, image_ids, split)

    def resplit(self, test: float = 0.2, val: float = 0.0) -> dict[str, int]:
        """Re-draw all splits, stratified by label and deterministic; returns each split's size."""
        from artannot.data.splits import resplit

        return resplit(self.conn, test=test, val=val)

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

    # ---- tags (multi-label) ------------------------------------------------------------------------
    def tags(self) -> list[tuple[str, int]]:
        """Every tag with how many images carry it, by name."""
        return tag_store.tag_counts(self.conn)

    def image_tags(self, image_ids: Sequence[int]) -> dict[int, list[str]]:
        """The tags each image carries (images without tags left out)."""
        return tag_store.tags_for(self.conn, image_ids)

    def add_tags(self, image_ids: Sequence[int], names: Sequence[str]) -> int | None:
        """A curator tags images (new tag names are created), one undoable edit; None if nothing changed."""
        return tag_store.set_tags(self.conn, image_ids, names, True)

    def remove_tags(self, image_ids: Sequence[int], names: Sequence[str]) -> int | None:
        """A curator removes tags from images, one undoable edit; None if none of them had the tags."""
        return tag_store.set_tags(self.conn, image_ids, names, False)

    def tags_from_filenames(self, vocabulary: str | Path) -> tuple[int | None, int]:
        """Noisy tags from file-name tokens matched to a tag vocabulary (`tag: synonym, …` lines), one undoable
        edit that never changes a curator's tags; (event id or None, images matched)."""
        from artannot.data.rules import Vocabulary, tags_from_filenames

        return tags_from_filenames(self.conn, Vocabulary.from_file(vocabulary))

    def rename_tag(self, old: str, new: str) -> int | None:
        """Rename a tag everywhere (to an existing tag's name: merge into it), one undoable edit."""
        return tag_store.rename_tag(self.conn, old, new)

    def delete_tag(self, name: str) -> int | None:
        """Take a tag off every image, one undoable edit."""
        return tag_store.delete_tag(self.conn, name)

    def accept_tag_suggestions(self, image_ids: Sequence[int], *, model_id: int | None = None) -> int | None:
        """Give images the tags the (newest) tag model scores over threshold, as a curator's one undoable edit;
        None when there is no tag model or nothing to add. Tags a curator removed stay removed."""
        model_id = model_id if model_id is not None else tag_store.latest_tag_model_id(self.conn)
        return None if model_id is None else tag_store.accept_suggestions(self.conn, model_id, image_ids)

    def tag_suggestions(self, image_id: int, *, model_id: int | None = None) -> list[tuple[str, float, bool]]:
        """A tag model's (tag, probability, over its threshold) for an image, best first; [] with no tag model."""
        return self.tag_suggestions_for([image_id], model_id=model_id).get(image_id, [])

    def tag_suggestions_for(self, image_ids: Sequence[int], *,
                            model_id: int | None = None) -> dict[int, list[tuple[str, float, bool]]]:
        """tag_suggestions of many images in a few queries (images the model did not score are left out)."""
        model_id = model_id if model_id is not None else tag_store.latest_tag_model_id(self.conn)
        if model_id is None:
            return {}
        return {i: [(name, score, over) for _, name, score, over in scored]
                for i, scored in tag_store.tag_scores(self.conn, model_id, image_ids).items()}

    # ---- models -----------------------------------------------------------------------------------
    @property
    def feature_cache_path(self) -> Path:
        return self.cache_dir / "features.sqlite"

    def active_model_id(self) -> int | None:
        """The active model (the curator's choice, else the best by honest estimate): the one the grid shows."""
        return repo.active_model_id(self.conn)

    def _model(self, model_id: int | None, task: str | None = None):
        """A stored model by id (any task), else the active one; with task "detect", a detector only."""
        if model_id is None:
            model_id = self.detector_model_id() if task == "detect" else self.active_model_id()
        if model_id is None:
            raise ModelError("no detector yet: train one with `artannot train --method detector` (or patches)"
                             if task == "detect" else
                             "no trained model yet: run `artannot train` (or Train in the app) first")
        row = repo.get_model(self.conn, model_id)
        if row is None:
            raise ModelError(f"no model with id {model_id} in this project")
        if task is not None and model_task(row["method"], row["params"]) != task:
            raise ModelError(f"model {model_id} is not a detector (method {row['method']})")
        return row

    def train(self, *, method: str = "svm", backbone: str = "efficientnet_lite0", epochs: int | None = None,
              device: str = "auto", then_svm: bool = False, options: dict | None = None,
              augment: str | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None):
        """Train on the labelled train split, store the model, predict every image, evaluate on test.

        method is one of METHODS (ml/tasks.py dispatches it to its task); options holds the method's settings (learning rates,
        layer groups, --models, --mapping, --intermediate, the auto time budget...). augment "style[:K]" first
        makes K stylized copies of each training image in the collection's own styles (ml/style.py; network
        and detector methods). Returns a TrainResult (None only in the non-zero processes of a torchrun job).
        """
        from artannot.ml import style
        from artannot.ml.task import TrainRequest

        if method not in METHODS:
            raise ModelError(f"unknown --method {method}; choose one of: {', '.join(METHODS)}")
        request = TrainRequest(method, backbone=backbone, epochs=epochs, then_svm=then_svm, options=dict(options or {}),
                               augment=augment)
        copies = style.parse_augment(augment)
        if copies:
            if method not in style.AUGMENTED_METHODS:
                raise ModelError(f"--augment style needs a method that trains a network or a detector"
                                 f" ({', '.join(style.AUGMENTED_METHODS)}), not {method}")
            request.options["style_augment"] = copies  # stored with the model; "augment" is crops on/off
            request.options["augment_index"] = str(style.prepare(
                self.conn, self.cache_dir, method, copies, backbone=backbone,
                pool=str(request.options.get("style_pool", "all")), progress=progress, cancel=cancel))
        from artannot.ml.decode_cache import prune_project  # torch is loaded for training anyway, not at open

        prune_project(self.conn, self.cache_dir)  # decoded pixels of images no longer in the project
        return tasks.train(self.conn, self.cache_dir, request, device=device, progress=progress, cancel=cancel)

    def models(self) -> list[dict]:
        """Every trained model with its method, backbone and test scores, oldest first (to compare them)."""
        return tasks.list_models(self.conn)

    def evaluate(self, model_id: int | None = None, split: str | None = "test") -> dict:
        """Top-1/top-5, per class and confusion of a model's stored predictions on a split (mAP per tag for
        a tag model)."""
        return tasks.evaluate(self.conn, self.cache_dir, self._model(model_id), split)

    def predict_files(self, paths: Sequence[str | Path], *, model_id: int | None = None, top: int = 5,
                      progress: Progress | None = None, cancel: threading.Event | None = None
                      ) -> list[tuple[str, list[tuple[str, float]]]]:
        """Top-k (class, score) of image files that need not be in the project."""
        from artannot.data.images import sha256_file
        from artannot.ml.classify.methods import score_model
        from artannot.ml.device import select_runtime

        row = self._model(model_id)
        items = []
        for p in paths:
            try:
                items.append((str(p), sha256_file(p)))
            except OSError as exc:
                raise ArtAnnotError(f"cannot read {p}: {exc.strerror or exc}") from None
        proba, class_ids, ok = score_model(self.conn, self.cache_dir, row, items, select_runtime("auto"),
                                           progress=progress, cancel=cancel)
        from artannot.store.classes import negative_class_ids, shown_ranking

        names = repo.class_names(self.conn)
        negative = negative_class_ids(self.conn)  # "no instrument": never a guess, none when it is the top one
        out = []
        for (path, _), p, good in zip(items, proba, ok, strict=False):
            order = np.argsort(-p, kind="stable") if good else []
            ranked = shown_ranking([(int(class_ids[k]), float(p[k])) for k in order], negative)[:top]
            out.append((path, [(names[c], s) for c, s in ranked]))
        return out

    def predict_source(self, src: str | Path | None = None, *, model_id: int | None = None, top: int = 5,
                       progress: Progress | None = None, cancel: threading.Event | None = None
                       ) -> list[tuple[str, list[tuple[str, float]]]]:
        """`artannot predict`: top-k (class, score) of an image file, of every image under a folder (which
        need not be in the project), or (None) of the project's images from the stored predictions."""
        from artannot.data.importer import scan_images

        if src is None:
            model = model_id if model_id is not None else self.active_model_id()
            if model is None:
                raise ArtAnnotError("no trained model yet: train one first (artannot train, or Model ▸ Train)")
            return [(r.path, repo.top_predictions(self.conn, model, r.id)[:top]) for r in self.images()]
        src = Path(src).expanduser()
        paths = [src] if src.is_file() else list(scan_images(src)) if src.is_dir() else None
        if paths is None:
            raise ArtAnnotError(f"{src} is neither an image nor a folder")
        if not paths:
            raise ArtAnnotError(f"no images under {src}")
        return self.predict_files(paths, model_id=model_id, top=top, progress=progress, cancel=cancel)

    # ---- suspects ---------------------------------------------------------------------------------
    def suspects(self, top: int | None = 50, *, model_id: int | None = None, flagged_only: bool = False):
        """Images whose label a model finds most likely wrong, most suspect first (see ml/classify/suspects.py)."""
        from artannot.store.queries import top_suspects

        if top is not None and top < 1:
            raise ArtAnnotError("--top must be at least 1")
        return top_suspects(self.conn, self._model(model_id)["id"], top, flagged_only=flagged_only)

    # ---- insights (saliency, map, similar images) -------------------------------------------------
    def _insight_model(self, model_id: int | None, backbone: str | None) -> int | None:
        """model_id, else the newest explainable model, else None (the ImageNet backbone); backbone forces ImageNet."""
        from artannot.ml.saliency import default_model

        if model_id is not None or backbone is not None:
            return model_id
        return default_model(self.conn)

    def saliency(self, image: int | str | Path, *, method: str = "gradcam", model_id: int | None = None,
                 backbone: str | None = None, class_name: str | None = None, device: str = "auto"):
        """Where a model looks in one image (a project image id or a file): a SaliencyMap (Grad-CAM or VBP)."""
        from artannot.data.images import load_image
        from artannot.ml.device import select_runtime
        from artannot.ml.saliency import SALIENCY_SIDE, explain, load_explainer, model_source

        if isinstance(image, int):
            if self.conn.execute("SELECT 1 FROM images WHERE id = ?", (image,)).fetchone() is None:
                raise ArtAnnotError(f"no image with id {image} in this project")
            image = repo.image_path(self.conn, image)
        picture = load_image(image, max_side=SALIENCY_SIDE)  # a huge scan shrinks on load
        source = model_source(self.conn, self._insight_model(model_id, backbone), backbone or "efficientnet_lite0")
        explainer = load_explainer(self.conn, source)
        k = None
        if class_name is not None:
            if class_name not in explainer.class_names:
                raise ModelError(f"class {class_name!r} is not one of the model's classes: "
                                 f"{', '.join(explainer.class_names[:20])}")
            k = explainer.class_names.index(class_name)
        return explain(explainer, picture, method=method, class_index=k, device=select_runtime(device).device)

    def embedding(self, *, model_id: int | None = None, backbone: str | None = None,
                  progress: Progress | None = None, cancel: threading.Event | None = None):
        """The t-SNE map of every image in a model's feature space (cached per model and image set)."""
        from artannot.ml.embedding import collection_embedding

        return collection_embedding(self.conn, self.cache_dir, self._insight_model(model_id, backbone),
                                    progress=progress, cancel=cancel)

    def similar(self, image_id: int, *, k: int = 12, mode: str = "cosine", model_id: int | None = None,
                backbone: str | None = None, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> list[tuple[int, float]]:
        """"More like this": (image id, cosine similarity or Hamming distance) of the k nearest images."""
        from artannot.ml.embedding import cosine_knn, hamming_knn, hash_codes, model_features

        images = repo.all_images(self.conn)
        feats, ok, _ = model_features(self.conn, self.cache_dir, self._insight_model(model_id, backbone),
                                      [(p, sha) for _, p, sha in images], progress=progress, cancel=cancel)
        ids = [i for (i, _, _), good in zip(images, ok, strict=True) if good]
        if image_id not in ids:
            raise ArtAnnotError(f"image {image_id} is not in the project or cannot be read")
        q = ids.index(image_id)
        if mode == "hamming":
            idx, dist = hamming_knn(hash_codes(feats[ok]), [q], k)
        elif mode == "cosine":
            idx, dist = cosine_knn(feats[ok], [q], k)
        else:
            raise ArtAnnotError(f"similarity mode must be cosine or hamming, not {mode!r}")
        return [(ids[j], float(d)) for j, d in zip(idx[0], dist[0], strict=True)]

    # ---- export -----------------------------------------------------------------------------------
    def export_onnx(self, out: str | Path, *, model_id: int | None = None) -> tuple[Path, Path]:
        """A model as OUT/model.onnx (image tensor -> probabilities) and OUT/model.json (see ml/onnx_export.py)."""
        from artannot.ml.onnx_export import export_onnx

        return export_onnx(self.conn, self._model(model_id), out)

    def export(self, out: str | Path, fmt: str, *, progress: Progress | None = None) -> int:
        """Write the curated set or predictions in a format other tools read; returns rows written."""
        from artannot.data.export import export

        return export(self.conn, Path(out).expanduser(), fmt, progress=progress)

    # ---- detection (boxes a detector proposes) ----------------------------------------------------
    def detector_model_id(self) -> int | None:
        """The detector proposals come from: the curator's choice, else the one with the best stored box mAP."""
        from artannot.store.models import active_model_id

        return active_model_id(self.conn, task="detect")

    def detector(self, model_id: int | None = None):
        """A stored detector's row: model_id, else the one proposals come from; ModelError when there is none."""
        return self._model(model_id, task="detect")

    def _boxed_image_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT image_id FROM boxes WHERE active = 1")}

    def propose_boxes(self, image_ids: Sequence[int] | None = None, *, model_id: int | None = None,
                      min_score: float = 0.05, device: str = "auto", progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> dict:
        """Run a detector over images (None: every image without boxes) and store its detections as open
        proposals (replacing the images' earlier open ones, never over a drawn or rejected box).

        Returns {"model": id, "images": images run on, "proposals": proposals stored}.
        """
        from artannot.ml.detect.predict import detect_images
        from artannot.store import proposals as proposal_store

        row = self.detector(model_id)
        boxed = self._boxed_image_ids()
        if image_ids is None:
            image_ids = [r[0] for r in self.conn.execute("SELECT id FROM images ORDER BY id") if r[0] not in boxed]
        image_ids = [int(i) for i in dict.fromkeys(image_ids)]
        dets = detect_images(self.conn, self.cache_dir, row, image_ids, threshold=min_score, device=device,
                             progress=progress, cancel=cancel)
        if cancel is not None and cancel.is_set():
            from artannot.errors import Cancelled

            raise Cancelled("proposing boxes cancelled")
        stored = proposal_store.replace_proposals(self.conn, row["id"], dets, image_ids)
        checked = [i for i in image_ids if i in boxed]
        if checked:  # what box_suspects reads: the detection over each drawn box, or none
            proposal_store.record_box_checks(self.conn, row["id"], dets, checked)
        return {"model": row["id"], "images": len(image_ids), "proposals": stored}

    def detect_files(self, paths: Sequence[str | Path] | None = None, *, model_id: int | None = None,
                     threshold: float = 0.3, device: str = "auto", progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> list[dict]:
        """Detections on image files (None: every project image) as COCO results: {"image": file,
        "image_id": project id or None, "category": class name, "category_id": class id, "bbox": [x, y, w, h]
        in pixels, "score"}, best first per image."""
        from artannot.ml.detect.predict import detect_images

        row = self.detector(model_id)
        file_of = {i: str(p) for i, p, _ in repo.all_images(self.conn)} if paths is None else {}
        targets: list = list(file_of) if paths is None else [Path(p) for p in paths]
        dets = detect_images(self.conn, self.cache_dir, row, targets, threshold=threshold, device=device,
                             progress=progress, cancel=cancel)
        names = repo.class_names(self.conn)
        out = []
        for target, class_id, x, y, w, h, score in dets:
            is_id = not isinstance(target, (str, Path))
            out.append({"image": file_of.get(target, str(target)) if is_id else str(target),
                        "image_id": int(target) if is_id else None,
                        "category": names.get(class_id, str(class_id)), "category_id": class_id,
                        "bbox": [round(float(v), 2) for v in (x, y, w, h)], "score": round(float(score), 5)})
        return out

    def box_suspects(self, model_id: int | None = None, *, min_score: float = 0.5, refresh: bool = False,
                     device: str = "auto", progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> list[dict]:
        """Boxes to check, most confident first: {"kind": "missing" (a confident open proposal on an image the
        curator already boxed), "doubtful" (a drawn box no detection overlaps) or "class" (a detection over a
        box with another class), "image_id", "box_id", "proposal_id", "class_id", "det_class_id", "score",
        "bbox"}.

        They come from the detector's last run over the boxed images (propose_boxes on them); when it never
        ran there, or with refresh, it runs now (replacing those images' open proposals)."""
        from artannot.store import proposals as proposal_store

        row = self.detector(model_id)
        if refresh or not proposal_store.has_box_checks(self.conn, row["id"]):
            boxed = sorted(self._boxed_image_ids())
            if boxed:
                self.propose_boxes(boxed, model_id=row["id"], device=device, progress=progress, cancel=cancel)
        return proposal_store.box_suspects(self.conn, row["id"], min_score=min_score)
