"""Training images/s and inference ms/image of the app's detector vs torchvision's raw forward/backward, same run.

The app path is `train --method detector` itself (artannot.ml.detect.train: images decoded and resized once,
repeat-factor sampling, flips, warm-up + cosine LR per step, AMP on CUDA, cancel checks, progress; its own
images/s over the epochs, loading and evaluation excluded) and Detector.detect_tensor for inference (per-image
post-processing to image pixels). The raw path runs the same Faster R-CNN (same config, optimizer, batch) on
tensors and targets made beforehand, timed before and after the app run and averaged so a machine that speeds
up or slows down does not bias the ratio. Target: ratio >= 0.8. Also prints the box mAP (pycocotools) of
the trained detector on the project's test split. Prints JSON.
Usage: python bench/detector_speed.py [--project P.artannot] [--epochs 2] [--device auto] [--min-size 448]
(without --project, a project of generated scenes is built in a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artannot.ml.detect.data import TRAIN_SPLITS, box_images, load_scaled, xyxy  # noqa: E402
from artannot.ml.detect.model import DetectorConfig, build_detector  # noqa: E402
from artannot.ml.detect.predict import Detector  # noqa: E402
from artannot.ml.device import select_runtime  # noqa: E402
from artannot.project import Project  # noqa: E402


def raw_batches(project: Project, cfg: DetectorConfig, n: int, batch: int, device) -> list:
    """n training images as (tensors, targets) batches, made beforehand."""
    images = [im for im in box_images(project.conn, TRAIN_SPLITS) if im.boxes][:n]
    index = {c: k + 1 for k, c in enumerate(cfg.class_ids)}
    data = []
    for im in images:
        x, scale = load_scaled(im.path, cfg.min_size, cfg.max_size)
        boxes = [b for b in im.boxes if b[0] in index]
        data.append((x.to(device), {"boxes": xyxy(boxes, scale).to(device),
                                    "labels": torch.tensor([index[b[0]] for b in boxes], device=device)}))
    return [data[k : k + batch] for k in range(0, len(data), batch)]


def raw_train(cfg: DetectorConfig, batches: list, runtime, steps: int) -> float:
    """Images/s of plain forward/backward/step of the same model on pre-made batches."""
    model = build_detector(cfg).to(runtime.device).train()
    cuda = runtime.device.type == "cuda"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    seen, t0 = 0, None
    for k in range(steps + 2):
        if k == 2:  # two warm-up steps
            if cuda:
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        b = batches[k % len(batches)]
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            loss = sum(model([x for x, _ in b], [t for _, t in b]).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        seen += len(b)
    if cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def infer_ms(fn, tensors: list, runtime) -> float:
    for x in tensors[:2]:
        fn(x)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in tensors:
        fn(x)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / len(tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="a project with boxes (default: generated scenes)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--min-size", type=int, help="shorter side the network sees (default: the app's)")
    ap.add_argument("--infer-images", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    runtime = select_runtime(args.device)
    if args.project is None:
        from tests.test_detect import build_project

        args.project = str(build_project(Path(tempfile.mkdtemp()), n=48))
    options = {"min_size": args.min_size} if args.min_size else {}
    with Project(args.project) as project:
        cuda = runtime.device.type == "cuda"
        result = project.train(method="detector", epochs=args.epochs, device=args.device, options=options)
        cfg = DetectorConfig.from_json(result.params["config"])
        batch = result.params["batch_size"]
        batches = raw_batches(project, cfg, 32, batch, runtime.device)
        steps = max(4, 16 // batch) if not cuda else 40
        raw_before = raw_train(cfg, batches, runtime, steps)
        app_ips = result.metrics["train_images_per_s"]
        raw_after = raw_train(cfg, batches, runtime, steps)
        raw_ips = (raw_before + raw_after) / 2
        row = project.conn.execute("SELECT * FROM models WHERE id = ?", (result.model_id,)).fetchone()
        det = Detector.from_row(project.cache_dir, row, runtime)
        tensors = [x for b in batches for x, _ in b][: args.infer_images]
        model = det.model.eval()

        def raw(x):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                return model([x])

        def app(x):
            return det.detect_tensor(x, 1.0, 0.05)

        # interleaved app, raw, raw, app: a machine that warms up or slows down biases neither
        timings = {"app": [], "raw": []}
        for name in ("app", "raw", "raw", "app"):
            timings[name].append(infer_ms(app if name == "app" else raw, tensors, runtime))
        app_ms, raw_ms = (sum(timings[k]) / 2 for k in ("app", "raw"))
        m = result.metrics
    print(json.dumps({
        "device": result.params["device"], "backbone": cfg.backbone, "min_size": cfg.min_size, "batch": batch,
        "epochs": args.epochs, "train_images_per_s": {"app": app_ips, "raw": raw_ips,
                                                      "raw_before": raw_before, "raw_after": raw_after,
                                                      "ratio": app_ips / raw_ips},
        "infer_ms_per_image": {"app": app_ms, "raw": raw_ms, "ratio": raw_ms / app_ms},
        "box_map": {"map": m.get("map"), "map50": m.get("map50"), "map75": m.get("map75"), "n": m.get("n")},
        "train_seconds": result.seconds, "project": args.project,
    }, indent=1))


if __name__ == "__main__":
    main()
