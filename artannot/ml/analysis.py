"""What fine-tuning changed (Gonthier et al.): linear CKA layer by layer, maximally activating images, overlap
of those sets between two models, class entropy of a channel's top images; per-class scores and curves.

Layer activations are the global averages of each stage's output channels (plus the penultimate features),
computed once per (network, image set) and cached under the project's cache folder, so comparing a second
pair of models that shares one network costs one pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from artannot.errors import Cancelled, ModelError
from artannot.store.files import atomic_write_bytes
from artannot.store.staged import READY

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int, str], None]

__all__ = [
    "LayerActivations",
    "class_entropy",
    "cka_by_layer",
    "kernel_distance_by_layer",
    "layer_activations",
    "initial_network",
    "linear_cka",
    "mean_kernel_distance",
    "model_activations",
    "overlap_ratio",
    "per_class_scores",
    "top_activating",
    "top_overlap_by_layer",
    "training_curves",
]


# -- the measures -------------------------------------------------------------------------------------------


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centered kernel alignment of two representations of the same N examples (Kornblith et al. 2019).

    ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F), computed in float64; in [0, 1], 1 for representations
    equal up to rotation and isotropic scaling.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"CKA needs the same examples: {X.shape[0]} vs {Y.shape[0]} rows")
    X = X - X.mean(0, keepdims=True)
    Y = Y - Y.mean(0, keepdims=True)
    if max(X.shape[1], Y.shape[1]) > X.shape[0]:  # wide features: Gram matrices are smaller
        Kx, Ky = X @ X.T, Y @ Y.T
        num, dx, dy = (Kx * Ky).sum(), np.linalg.norm(Kx), np.linalg.norm(Ky)
    else:
        num = np.linalg.norm(Y.T @ X) ** 2
        dx, dy = np.linalg.norm(X.T @ X), np.linalg.norm(Y.T @ Y)
    if dx <= 0 or dy <= 0:
        return 0.0
    return float(num / (dx * dy))


def top_activating(acts: np.ndarray, channel: int, n: int = 100) -> np.ndarray:
    """Row indices of the n images that activate a channel most, strongest first."""
    col = np.asarray(acts)[:, channel]
    n = min(n, len(col))
    part = np.argpartition(-col, n - 1)[:n] if n < len(col) else np.arange(len(col))
    return part[np.lexsort((part, -col[part]))]


def overlap_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A| of two equally long top-N sets (Gonthier: how many top images a channel kept)."""
    a, b = set(int(i) for i in a), set(int(i) for i in b)
    return len(a & b) / max(len(a), 1)


def class_entropy(labels: Sequence[int | None], n_classes: int | None = None) -> float:
    """Normalized entropy of the class labels of a channel's top images: 0 = one class, 1 = uniform.

    Unlabelled images (None) are left out; normalized by log(number of classes in the collection).
    """
    vals = [int(v) for v in labels if v is not None]
    if not vals:
        return float("nan")
    _, counts = np.unique(vals, return_counts=True)
    k = n_classes if n_classes is not None else len(counts)
    if k <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(k))


def top_overlap_by_layer(a: LayerActivations, b: LayerActivations, n: int = 100) -> list[float]:
    """Mean over channels of the top-n overlap ratio between two models, per shared layer (same channels)."""
    out = []
    for name in a.names:
        if name not in b.names or a[name].shape != b[name].shape:
            out.append(float("nan"))
            continue
        A, B = a[name], b[name]
        m = min(n, len(A))
        ta = np.argpartition(-A, m - 1, axis=0)[:m] if m < len(A) else np.tile(np.arange(len(A))[:, None],
                                                                               (1, A.shape[1]))
        tb = np.argpartition(-B, m - 1, axis=0)[:m] if m < len(B) else ta
        ratios = [len(set(ta[:, c].tolist()) & set(tb[:, c].tolist())) / m for c in range(A.shape[1])]
        out.append(float(np.mean(ratios)))
    return out


# -- activations of a network over a collection ---------------------------------------------------------------


@dataclass
class LayerActivations:
    """Global-average-pooled activations of each stage (N × channels), for one network over N images."""

    names: list[str]
    arrays: list[np.ndarray]
    ok: np.ndarray  # rows whose image could be read
    description: str = ""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[self.names.index(name)]


def _layer_names(net: torch.nn.Module, n_maps: int) -> list[str]:
    """Readable names of stage_outputs' maps, then 'features'."""
    if hasattr(net, "pool_features"):  # EfficientNet-Lite: stem, stage1..7, head conv
        names = ["stem", *[f"stage{i}" for i in range(1, n_maps - 1)], "head conv"]
    else:
        names = [f"stage{i}" for i in range(n_maps)]
    return [*names, "features"]


def layer_activations(net: torch.nn.Module, spec, paths: Sequence[str], *, batch_size: int = 16,
                      device: str | torch.device = "cpu", progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> LayerActivations:
    """One pass over the images: GAP of every stage map, and the penultimate features."""
    import torch

    with torch.inference_mode():
        return _layer_activations(net, spec, paths, batch_size, device, progress, cancel)


def _layer_activations(net, spec, paths, batch_size, device, progress, cancel) -> LayerActivations:
    import torch

    from artannot.ml.backbones import build_transform
    from artannot.ml.device import select_runtime
    from artannot.ml.features import make_loader
    from artannot.ml.saliency import stage_outputs

    net = net.eval().to(device)
    runtime = select_runtime("cpu") if torch.device(device).type == "cpu" else select_runtime(str(device))
    loader = make_loader(list(paths), build_transform(spec), spec.input_size, runtime, batch_size)
    chunks: list[list[np.ndarray]] = []
    ok: list[np.ndarray] = []
    done = 0
    for x, good in loader:
        if cancel is not None and cancel.is_set():
            raise Cancelled("analysis cancelled")
        maps, feats = stage_outputs(net, x.to(device))
        chunks.append([m.float().mean(dim=(2, 3)).cpu().numpy() for m in maps] + [feats.float().cpu().numpy()])
        ok.append(good.numpy())
        done += len(x)
        if progress is not None:
            progress(done, len(paths), "layer activations")
    if not chunks:
        raise ModelError("no images to analyse")
    arrays = [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]
    return LayerActivations(_layer_names(net, len(arrays) - 1), arrays, np.concatenate(ok))


def _sample(items: list, max_images: int | None, seed: int = 0) -> list:
    """A deterministic subset (all when max_images is None or larger than the collection)."""
    if max_images is None or len(items) <= max_images:
        return items
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(items), max_images, replace=False))
    return [items[i] for i in keep]


def model_activations(conn: sqlite3.Connection, cache_dir: Path, model_id: int | None, *,
                      backbone: str = "efficientnet_lite0", max_images: int | None = 1000,
                      device: str = "cpu", net: torch.nn.Module | None = None, progress: Progress | None = None,
                      cancel: threading.Event | None = None, split: str | None = None,
                      variant: str = "", spec=None) -> tuple[LayerActivations, np.ndarray]:
    """Layer activations of a stored model's network (None: ImageNet backbone) on a sample of the collection
    (or of one split's images).

    Returns (activations, image ids of the rows). Cached by (network, image set); `variant` names another
    network with the same source than the stored one (e.g. "init": its initialization, given as `net`);
    `spec` preprocesses the images as another network does (two networks compared on the same pixels).
    """
    from artannot.ml.saliency import model_source
    from artannot.store import repo

    source = model_source(conn, model_id, backbone)
    images = repo.all_images(conn)
    if split is not None:
        in_split = {int(r[0]) for r in conn.execute("SELECT id FROM images WHERE split = ?", (split,))}
        images = [im for im in images if im[0] in in_split]
        if not images:
            raise ModelError(f"no images in the {split} split to analyse (import with --split auto, or move"
                             f" some images to {split})")
    images = _sample(images, max_images)
    if not images:
        raise ModelError("the project has no images to analyse")
    ids = np.array([i for i, _, _ in images], dtype=np.int64)
    if spec is not None:
        variant = f"{variant}@{spec.input_size}/{spec.resize_size}"
    h = hashlib.sha256((f"1|{source.feature_key}|{source.image_size}" + (f"|{variant}" if variant else "")).encode())
    for _, _, sha in images:
        h.update(sha.encode())
    path = Path(cache_dir) / "analysis" / f"{h.hexdigest()[:24]}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(s) for s in data["names"]]
            acts = LayerActivations(names, [data[f"a{j}"] for j in range(len(names))], data["ok"],
                                    source.description)
            return acts, data["ids"]
    except (OSError, ValueError, KeyError):
        pass
    net = net if net is not None else source.load_network()
    acts = layer_activations(net, spec or source.spec(), [p for _, p, _ in images], device=device, progress=progress,
                             cancel=cancel)
    acts.description = source.description
    buf = io.BytesIO()
    np.savez(buf, names=np.array(acts.names), ok=acts.ok, ids=ids,
             **{f"a{j}": a.astype(np.float32) for j, a in enumerate(acts.arrays)})
    atomic_write_bytes(path, buf.getvalue())
    return acts, ids


def cka_by_layer(a: LayerActivations, b: LayerActivations) -> tuple[list[str], list[float]]:
    """Linear CKA between the two models' layers of the same name (rows readable in both)."""
    ok = a.ok & b.ok
    names = [n for n in a.names if n in b.names]
    if not names:  # different architectures: compare stage by stage from the input side, then features
        k = min(len(a.names), len(b.names)) - 1
        pairs = [*zip(a.arrays[:k], b.arrays[:k], strict=True), (a.arrays[-1], b.arrays[-1])]
        labels = [f"{x} / {y}" for x, y in zip(a.names[:k], b.names[:k], strict=True)] + ["features"]
        return labels, [linear_cka(x[ok], y[ok]) for x, y in pairs]
    return names, [linear_cka(a[n][ok], b[n][ok]) for n in names]


def _weight_layers(group: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of a layer group's convolutions and fully connected layers, in module order."""
    return [(n, w) for n, w in group.named_parameters() if n.endswith("weight") and w.dim() in (2, 4)]


def kernel_distance_by_layer(net_a: torch.nn.Module, net_b: torch.nn.Module) -> tuple[list[str], list[float], list[float]]:
    """Gonthier et al.'s l2 distance between the kernels of two networks, per layer group.

    As the paper (and its code) measures it: for each convolution, the l2 norm of the difference of its whole
    kernel tensor, ||W_a - W_b||_F (biases and batch-norm parameters left out); a layer group's figure is the
    mean of that over the group's convolutions (fully connected layers count as 1x1 convolutions). Returns
    (group names, mean ||W_a - W_b||_F, mean ||W_a - W_b||_F / ||W_a||_F): the relative figure is 0 for an
    unchanged layer and about 1.4 for a re-initialized one. Layers whose weights differ in shape (a classifier
    with other classes, another architecture) are left out, and a group with none of its layers left too.
    """
    from artannot.ml.networks import group_names

    groups_a, groups_b = net_a.layer_groups(), net_b.layer_groups()
    if len(groups_a) != len(groups_b):
        return [], [], []
    names, absolute, relative = [], [], []
    for name, ga, gb in zip(group_names(net_a), groups_a, groups_b, strict=True):
        dists, rels = [], []
        for (ka, wa), (kb, wb) in zip(_weight_layers(ga), _weight_layers(gb), strict=False):
            if ka != kb or wa.shape != wb.shape:
                continue
            a, b = wa.detach().double(), wb.detach().double()
            d = float((a - b).norm())
            dists.append(d)
            rels.append(d / max(float(a.norm()), 1e-12))
        if dists:
            names.append(name)
            absolute.append(float(np.mean(dists)))
            relative.append(float(np.mean(rels)))
    return names, absolute, relative


def mean_kernel_distance(net_a: torch.nn.Module, net_b: torch.nn.Module) -> float:
    """The paper's one figure per pair of networks: ||W_a - W_b||_F averaged over every convolution."""
    dists = []
    for ga, gb in zip(net_a.layer_groups(), net_b.layer_groups(), strict=False):
        for (ka, wa), (kb, wb) in zip(_weight_layers(ga), _weight_layers(gb), strict=False):
            if ka == kb and wa.shape == wb.shape and wa.dim() == 4:
                dists.append(float((wa.detach().double() - wb.detach().double()).norm()))
    return float(np.mean(dists)) if dists else float("nan")


def initial_network(conn: sqlite3.Connection, model_id: int) -> torch.nn.Module:
    """A stored fine-tuned network as it was when its training started, rebuilt from what the model recorded.

    Training (ml/finetune.py fit) seeds torch with the run's seed, then re-initializes the groups (or single
    layers) its layer plan marks, in order, on the backbone's ImageNet weights; the model's params keep that seed (network.config.seed)
    and plan (network.plan), so the same calls give the same initial weights without storing them.
    """
    import torch

    from artannot.ml.networks import GroupPlan, build_network, load_network, plan_modules, reinitialize
    from artannot.ml.saliency import model_source
    from artannot.store import repo

    row = repo.get_model(conn, model_id)
    if row is None:
        raise ModelError(f"no model with id {model_id} in this project")
    params = json.loads(row["params"] or "{}")
    network = params.get("network") or {}
    features_of = ((params.get("predictor") or {}).get("features") or {}).get("model")
    if not network and isinstance(features_of, int) and features_of != model_id:
        return initial_network(conn, features_of)  # a head on another model's network: that network's start
    plan, config = network.get("plan"), network.get("config") or {}
    if not plan or "seed" not in config:
        raise ModelError(f"model {model_id} did not record how its network was initialized (seed and layer plan);"
                         " compare it --against imagenet")
    if network.get("intermediate") or network.get("recipe") == "double":
        raise ModelError(f"model {model_id} was double fine-tuned: it started from a network trained on another"
                         " project, which was not kept; compare it --against imagenet")
    source = model_source(conn, model_id)
    if not source.fine_tuned:
        raise ModelError(f"model {model_id} has no fine-tuned network")
    _, meta = load_network(source.network_path)
    init = build_network(meta["backbone"], int(meta["n_outputs"]))
    fields = {f.name for f in dataclasses.fields(GroupPlan)}
    steps = [GroupPlan(**{k: v for k, v in p.items() if k in fields}) for p in plan]
    torch.manual_seed(int(config["seed"]))  # as fit() does, right before it re-initializes
    for module, p in zip(plan_modules(init, steps), steps, strict=True):  # groups, or single layers
        if p.reinit:
            reinitialize(module)
    return init.eval()


# -- stored metrics -----------------------------------------------------------------------------------------


def per_class_scores(conn: sqlite3.Connection, model_id: int) -> dict[str, dict]:
    """A stored model's per-class test top-1/top-5/n (from its metrics)."""
    from artannot.store import repo

    row = repo.get_model(conn, model_id)
    if row is None:
        raise ModelError(f"no model with id {model_id} in this project")
    return dict(json.loads(row["metrics"] or "{}").get("per_class", {}))


def training_curves(conn: sqlite3.Connection) -> dict[int, list[dict]]:
    """Per-epoch curves (train/val loss and top-1) of every stored model that has them, by model id."""
    out = {}
    for model_id, metrics in conn.execute(f"SELECT id, metrics FROM models WHERE {READY} ORDER BY id"):
        curves = json.loads(metrics or "{}").get("curves") or []
        if curves:
            out[int(model_id)] = curves
    return out
