"""Export a stored model as one ONNX graph (image tensor -> probabilities) with a JSON sidecar.

The graph takes a float32 batch N×3×H×W of RGB pixels scaled to 0..1, already resized (shorter side to
`resize`, bilinear) and centre-cropped to `input_size`, exactly as build_transform does before its
Normalize; the graph normalizes (mean/std), runs the backbone's forward_features and the model's head,
and ends in softmax (classes) or sigmoid (tags). `preprocess` is the reference preprocessing in numpy.
The batch axis is dynamic. The TorchScript exporter (dynamo=False) is used: it needs no onnxscript and
traces SameConv2d's size-dependent padding as constants for the fixed input side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from artannot import __version__
from artannot.errors import ModelError
from artannot.ml.backbones import get_spec, load_backbone
from artannot.ml.networks import load_network, sized_spec
from artannot.store.model_files import model_predictor, project_cache_dir

OPSET = 17


class _ArrayHead(nn.Module):
    """Standardize features, then a linear layer (logistic probe or tag head)."""

    def __init__(self, mean, scale, weight, bias):
        super().__init__()
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float32)  # noqa: E731
        self.register_buffer("mean", f32(mean))
        self.register_buffer("scale", f32(scale))
        self.register_buffer("weight", f32(weight))
        self.register_buffer("bias", f32(bias))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return ((f - self.mean) / self.scale) @ self.weight + self.bias


class _Graph(nn.Module):
    """0..1 RGB batch -> normalized -> features -> head -> softmax or sigmoid."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None, mean, std, activation: str,
                 head_is_proba: bool = False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.activation, self.head_is_proba = activation, head_is_proba

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features((x - self.mean) / self.std)
        z = self.backbone.forward_head(f) if self.head is None else self.head(f)
        if self.head_is_proba:
            return z
        return torch.sigmoid(z) if self.activation == "sigmoid" else torch.softmax(z, 1)


def _feature_source(source: dict):
    """(backbone module, spec, description) of a classifier's feature source (ImageNet or fine-tuned)."""
    if "network" in source:
        model, meta = load_network(source["network"])
        return model, sized_spec(meta["backbone"], source.get("image_size") or meta.get("image_size")), \
            f"fine-tuned {meta['backbone']}"
    return load_backbone(source["backbone"]), get_spec(source["backbone"]), f"ImageNet {source['backbone']}"


def build_graph(cache_dir, row, class_names: dict[int, str], tag_names: dict[int, str] | None = None):
    """(module, sidecar dict) of a stored model row; ModelError for kinds with no single graph."""
    from artannot.ml.classify.classifiers import SVMClassifier
    from artannot.ml.classify.linear import LinearProbe
    from artannot.ml.tags.multilabel import TagHead

    pred = model_predictor(cache_dir, row)[1]  # its files, under this project's cache folder
    kind = pred["kind"]
    extra: dict = {}
    if kind == "network":
        model, meta = load_network(pred["path"])
        spec = sized_spec(meta["backbone"], meta.get("image_size"))
        graph = _Graph(model, None, spec.mean, spec.std, "softmax")
        ids, activation, what = [int(c) for c in meta["class_ids"]], "softmax", f"fine-tuned {meta['backbone']}"
    elif kind == "classifier":
        backbone, spec, what = _feature_source(pred["features"])
        if pred["classifier"] == "linear":
            clf = LinearProbe.load(pred["path"])
            head: nn.Module = _ArrayHead(clf.mean_, clf.scale_, np.asarray(clf.coef_).T, clf.intercept_)
            graph = _Graph(backbone, head, spec.mean, spec.std, "softmax")
        elif pred["classifier"] == "knn":
            from artannot.ml.classify.knn import KNNClassifier

            clf = KNNClassifier.load(pred["path"])
            graph = _Graph(backbone, clf.as_torch(), spec.mean, spec.std, "softmax", head_is_proba=True)
        else:
            clf = SVMClassifier.load(pred["path"])
            if not hasattr(clf, "as_torch"):
                raise ModelError("this ArtAnnot cannot export SVM models to ONNX yet (SVMClassifier.as_torch is"
                                 " missing); export a linear or fine-tuned model")
            graph = _Graph(backbone, clf.as_torch(), spec.mean, spec.std, "softmax", head_is_proba=True)
        ids, activation = [int(c) for c in clf.classes_], "softmax"
        what += f" + {pred['classifier']}"
    elif kind == "tags":
        backbone, spec, what = _feature_source(pred["features"])
        head_arrays = TagHead.load(pred["path"])
        graph = _Graph(backbone, _ArrayHead(head_arrays.mean_, head_arrays.scale_, head_arrays.coef_,
                                            head_arrays.intercept_), spec.mean, spec.std, "sigmoid")
        ids, activation = [int(t) for t in json.loads(row["classes"])], "sigmoid"
        extra["thresholds"] = [float(v) for v in head_arrays.thresholds_]
        what += " + tag head"
    else:
        raise ModelError(f"model {row['id']} ({kind}) cannot be exported to ONNX: export one of its members or"
                         " a classifier, network or tag model")
    names = tag_names if activation == "sigmoid" else class_names
    metrics = json.loads(row["metrics"] or "{}") if row["metrics"] else {}
    sidecar = {
        "format": "artannot-onnx/1", "artannot_version": __version__, "model_id": int(row["id"]),
        "method": row["method"], "model": what, "output": activation,
        "classes" if activation == "softmax" else "tags": [(names or {}).get(i, str(i)) for i in ids],
        "input": {"name": "image", "shape": ["N", 3, spec.input_size, spec.input_size], "dtype": "float32"},
        "input_size": spec.input_size,
        "preprocessing": {"rgb": True, "resize": spec.resize_size, "resize_interpolation": spec.interpolation,
                          "center_crop": spec.input_size, "scale": "0-1 (pixel / 255)",
                          "description": f"convert to RGB, resize the shorter side to {spec.resize_size} px "
                                         f"({spec.interpolation}), centre-crop {spec.input_size}x"
                                         f"{spec.input_size}, scale pixels to 0..1, NCHW float32"},
        "normalization": {"mean": list(spec.mean), "std": list(spec.std), "applied": "inside the graph"},
        "metrics": metrics, **extra,
    }
    return graph.eval(), sidecar


def export_onnx(conn, row, out: str | Path) -> tuple[Path, Path]:
    """Write OUT/model.onnx and OUT/model.json for a stored model row."""
    from artannot.store import repo
    from artannot.store import tags as tag_store

    out = Path(out).expanduser()
    graph, sidecar = build_graph(project_cache_dir(conn), row, repo.class_names(conn), tag_store.tag_names(conn))
    out.mkdir(parents=True, exist_ok=True)
    size = sidecar["input_size"]
    dummy = torch.rand(2, 3, size, size)
    onnx_path, json_path = out / "model.onnx", out / "model.json"
    try:
        with torch.no_grad():
            torch.onnx.export(graph, (dummy,), str(onnx_path), input_names=["image"], output_names=["probabilities"],
                              dynamic_axes={"image": {0: "N"}, "probabilities": {0: "N"}}, opset_version=OPSET,
                              dynamo=False)
    except Exception as exc:  # the exporter raises many kinds; the curator gets one line
        raise ModelError(f"ONNX export failed: {str(exc).strip().splitlines()[0][:160]}") from None
    json_path.write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return onnx_path, json_path


def preprocess(path: str | Path, sidecar: dict) -> np.ndarray:
    """The graph's input for one image file (3×S×S float32), as the sidecar describes it."""
    from torchvision import transforms as T

    from artannot.data.images import load_image

    pre = sidecar["preprocessing"]
    image = load_image(path, min_side=int(pre["resize"]) if isinstance(pre["resize"], int) else None)
    image = image if image.mode == "RGB" else image.convert("RGB")
    tf = T.Compose([T.Resize(pre["resize"], interpolation=T.InterpolationMode(pre["resize_interpolation"])),
                    T.CenterCrop(pre["center_crop"]), T.ToTensor()])
    return tf(image).numpy()
