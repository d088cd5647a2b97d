"""Images/s of the app's feature extraction vs the raw model forward on the same images, same run.

The app path decodes files safely, transforms them in DataLoader workers and runs the backbone with the
runtime's fast path; the raw path runs only the forward on tensors prepared beforehand. Target: ratio >= 0.8.
Usage: python bench/feature_speed.py [--images artannot/resources/demo] [--device auto] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from artannot.data.images import load_image, sha256_file
from artannot.data.importer import scan_images
from artannot.ml.backbones import build_transform, get_spec, load_backbone
from artannot.ml.device import select_runtime
from artannot.ml.features import extract_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="artannot/resources/demo")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    runtime = select_runtime(args.device)
    spec = get_spec(args.backbone)
    paths = [str(p) for p in scan_images(Path(args.images))]
    items = [(p, sha256_file(p)) for p in paths]
    model = runtime.prepare(load_backbone(args.backbone))
    transform = build_transform(spec)
    tensors = torch.stack([transform(load_image(p)) for p in paths])

    def raw() -> float:
        t = time.perf_counter()
        with torch.inference_mode(), runtime.autocast():
            for start in range(0, len(tensors), args.batch_size):
                model.forward_features(runtime.batch(tensors[start : start + args.batch_size])).float().cpu()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return len(tensors) / (time.perf_counter() - t)

    def app() -> float:
        t = time.perf_counter()
        extract_features(items, backbone=args.backbone, cache=None, runtime=runtime,
                         batch_size=args.batch_size, model=model)
        return len(items) / (time.perf_counter() - t)

    raw()  # warm-up: allocator, kernels, autotuning
    raw_ips = max(raw() for _ in range(args.repeat))
    app_ips = max(app() for _ in range(args.repeat))
    print(json.dumps({
        "images": len(items), "backbone": args.backbone, "runtime": runtime.describe,
        "threads": torch.get_num_threads(), "raw_images_per_s": round(raw_ips, 1),
        "app_images_per_s": round(app_ips, 1), "ratio": round(app_ips / raw_ips, 3),
    }))


if __name__ == "__main__":
    main()
