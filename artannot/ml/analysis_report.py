"""`artannot analysis`: what fine-tuning changed in a network (Gonthier et al.), layer by layer, on the test split.

A fine-tuned network A is compared with B: the ImageNet backbone it started from ("imagenet"), its own
initialization ("init", rebuilt from the seed and layer plan it recorded), or another stored model (an id).
Per layer: linear CKA of the two networks' global-average-pooled activations on the test images, the mean
top-N overlap of each channel's maximally activating images, the normalized class entropy of those images
for each network, and the mean l2 distance between the two networks' kernels (analysis.kernel_distance_by_layer).
`write_plots` draws the figures as PNG files without Qt.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artannot.errors import ArtAnnotError, ModelError
from artannot.store.staged import READY

Progress = Callable[[int, int, str], None]

KERNEL_DEFINITION = ("per convolution ||W_A - W_B||_F over its whole kernel tensor (biases and batch norm left"
                     " out), averaged over the convolutions of a layer group (Gonthier et al.)")


def _nan_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def newest_network_model(conn: sqlite3.Connection) -> int:
    """The newest stored model that has a fine-tuned network of its own (what `analysis` looks at by default)."""
    from artannot.ml.saliency import model_source

    for (model_id,) in conn.execute(f"SELECT id FROM models WHERE {READY} ORDER BY id DESC"):
        try:
            if model_source(conn, int(model_id)).fine_tuned:
                return int(model_id)
        except ArtAnnotError:
            continue
    raise ModelError("no fine-tuned network in this project to analyse: train one (e.g. --method finetune) or"
                     " name a model with --model")


def _network_source(conn: sqlite3.Connection, model_id: int, role: str):
    from artannot.ml.saliency import model_source

    source = model_source(conn, model_id)
    if not source.fine_tuned:
        raise ModelError(f"model {model_id} ({role}) has no fine-tuned network to analyse: it is a classifier on"
                         " ImageNet features; pick a finetune, adaptive, frozen, double or tags --finetune model")
    return source


def entropy_by_layer(acts, labels: np.ndarray, n_classes: int, top: int) -> list[float]:
    """Per layer, the mean over channels of the normalized class entropy of the channel's top images."""
    from artannot.ml.analysis import class_entropy

    out = []
    for A in acts.arrays:
        m = min(top, len(A))
        idx = np.argpartition(-A, m - 1, axis=0)[:m] if m < len(A) else np.tile(np.arange(len(A))[:, None],
                                                                              (1, A.shape[1]))
        vals = [class_entropy([int(v) if v >= 0 else None for v in labels[idx[:, c]]], n_classes)
                for c in range(A.shape[1])]
        vals = [v for v in vals if not math.isnan(v)]
        out.append(float(np.mean(vals)) if vals else float("nan"))
    return out


def compare(conn: sqlite3.Connection, cache_dir: Path, model_id: int | None = None, against: str = "imagenet", *,
            split: str = "test", top: int = 100, max_images: int | None = None, device: str = "cpu",
            progress: Progress | None = None, cancel: threading.Event | None = None) -> dict:
    """The comparison as plain numbers (JSON-ready): per layer CKA, top-N overlap, class entropies, kernels."""
    import torch

    from artannot.ml.analysis import (
        cka_by_layer,
        initial_network,
        kernel_distance_by_layer,
        mean_kernel_distance,
        model_activations,
        top_overlap_by_layer,
    )
    from artannot.ml.saliency import model_source

    if top < 1:
        raise ModelError("--top must be at least 1")
    model_id = newest_network_model(conn) if model_id is None else int(model_id)
    source_a = _network_source(conn, model_id, "--model")
    net_a = source_a.load_network()
    against = str(against).strip().lower()
    variant, b_id, spec_b = "", None, source_a.spec()  # the same pixels for both, unless B is another backbone
    if against == "imagenet":
        net_b = model_source(conn, None, source_a.backbone).load_network()
        b_label = f"ImageNet {source_a.backbone}"
    elif against == "init":
        net_b, b_id, variant = initial_network(conn, model_id), model_id, "init"
        b_label = f"model {model_id} at initialization"
    elif against.isdigit():
        b_id = int(against)
        source_b = _network_source(conn, b_id, "--against")
        net_b, b_label = source_b.load_network(), source_b.description
        if source_b.backbone != source_a.backbone:
            spec_b = source_b.spec()
    else:
        raise ModelError(f"--against takes imagenet, init or a model id, not {against!r}")
    with torch.inference_mode():
        acts_a, ids = model_activations(conn, cache_dir, model_id, max_images=max_images, net=net_a, split=split,
                                        device=device, progress=progress, cancel=cancel)
        acts_b, ids_b = model_activations(conn, cache_dir, b_id, backbone=source_a.backbone, max_images=max_images,
                                          net=net_b, split=split, device=device, progress=progress, cancel=cancel,
                                          variant=variant, spec=spec_b)
    if not np.array_equal(ids, ids_b):
        raise ModelError("the two networks were measured on different images")
    ok = acts_a.ok & acts_b.ok
    if not ok.any():
        raise ModelError(f"none of the {split} images could be read")
    layers, cka = cka_by_layer(acts_a, acts_b)
    same = acts_a.names == acts_b.names
    overlap = top_overlap_by_layer(acts_a, acts_b, top) if same else [float("nan")] * len(layers)
    labels = np.full(len(ids), -1, dtype=np.int64)
    pos = {int(i): k for k, i in enumerate(ids.tolist())}
    for image_id, class_id in conn.execute("SELECT image_id, class_id FROM labels WHERE active = 1"
                                           " AND class_id IS NOT NULL"):
        if int(image_id) in pos:
            labels[pos[int(image_id)]] = int(class_id)
    n_classes = max(2, int(conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0]))
    ent_a = dict(zip(acts_a.names, entropy_by_layer(acts_a, labels, n_classes, top), strict=True))
    ent_b = dict(zip(acts_b.names, entropy_by_layer(acts_b, labels, n_classes, top), strict=True))
    k_names, k_l2, k_rel = kernel_distance_by_layer(net_a, net_b)
    kl2, krel = dict(zip(k_names, k_l2, strict=True)), dict(zip(k_names, k_rel, strict=True))
    per_layer = [{"layer": name, "cka": _nan_none(c), "overlap": _nan_none(o),
                  "entropy_a": _nan_none(ent_a.get(name)), "entropy_b": _nan_none(ent_b.get(name)),
                  "kernel_l2": _nan_none(kl2.get(name)), "kernel_relative": _nan_none(krel.get(name))}
                 for name, c, o in zip(layers, cka, overlap, strict=True)]
    per_layer += [{"layer": name, "cka": None, "overlap": None, "entropy_a": None, "entropy_b": None,
                   "kernel_l2": kl2[name], "kernel_relative": krel[name]} for name in k_names if name not in layers]
    return {
        "model": model_id, "against": against, "a": source_a.description, "b": b_label, "split": split,
        "n_images": int(ok.sum()), "top": int(min(top, int(ok.sum()))),
        "layers": [r["layer"] for r in per_layer], "per_layer": per_layer,
        "mean_cka": _nan_none(float(np.mean(cka))) if cka else None,
        "mean_kernel_l2": _nan_none(mean_kernel_distance(net_a, net_b)),
        "kernel_definition": KERNEL_DEFINITION,
        "note": (f"the top-{top} set of every channel is the whole split ({int(ok.sum())} images): overlap and"
                 " entropy cannot differ between the networks; use a larger split or a smaller --top")
        if top >= int(ok.sum()) else None,
    }


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """PNG figures of a comparison: CKA and overlap per layer, class entropy per layer, kernel l2 per group."""
    from artannot.ml.charts import line_chart
    from artannot.store.files import atomic_write_bytes

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ArtAnnotError(f"--out must name a folder, and {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    rows = report["per_layer"]
    act_rows = [r for r in rows if r["cka"] is not None]
    kernel_rows = [r for r in rows if r["kernel_l2"] is not None]
    pair = f"model {report['model']} vs {report['b']}"
    where = f"{report['n_images']} {report['split']} images"
    charts = {
        "cka.png": line_chart([r["layer"] for r in act_rows], {
            "linear CKA (GAP activations)": [r["cka"] for r in act_rows],
            f"mean top-{report['top']} overlap of channels": [r["overlap"] for r in act_rows]},
            title=f"Similarity layer by layer: {pair}, {where}", y_label="similarity", y_range=(0.0, 1.0)),
        "entropy.png": line_chart([r["layer"] for r in act_rows], {
            f"A: model {report['model']}": [r["entropy_a"] for r in act_rows],
            f"B: {report['b']}": [r["entropy_b"] for r in act_rows]},
            title=f"Normalized class entropy of each channel's top-{report['top']} images (mean), {where}",
            y_label="entropy (0 = one class)", y_range=(0.0, 1.0)),
    }
    if kernel_rows:
        charts["kernels.png"] = line_chart([r["layer"] for r in kernel_rows], {
            "mean ||W_A - W_B||_F per convolution": [r["kernel_l2"] for r in kernel_rows]},
            title=f"l2 distance between kernels: {pair}", y_label="l2 distance")
    written = []
    for name, picture in charts.items():
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        atomic_write_bytes(out / name, buf.getvalue())
        written.append(out / name)
    atomic_write_bytes(out / "analysis.json", (json.dumps(report, indent=1) + "\n").encode())
    written.append(out / "analysis.json")
    return written
