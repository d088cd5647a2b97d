"""Images/s of the app's feature extraction vs the raw model forward on the same images and batch, same run.

The app path is artannot.ml.features.extract_features: files decoded safely in DataLoader workers, the
backbone's resize + center crop as uint8, normalized on the device, the runtime's fast path (channels_last,
bf16 on CPUs that have it, CUDA fp16 autocast). It runs two ways:
  decode       no decode cache: every image decoded and resized again (a project's first extraction);
  cache-warm   the decode cache filled (memory-mapped uint8 entries): a second backbone of the same input
               size, a fine-tuned network's prediction, a re-extraction.
The raw path runs only the forward on float tensors prepared beforehand: the ceiling. It runs before and
after each app run, which is compared with the mean of the two; the median of --repeat rounds is reported.
Target: ratio >= 0.9.
On a GPU the mean utilization during each run is reported (torch.cuda.utilization, else nvidia-smi).
Backbones whose weights are not installed are skipped (or run with random weights: --random-weights).
Usage: python bench/feature_speed.py [--images artannot/resources/demo] [--limit N] [--device auto]
       [--backbones efficientnet_lite0,resnet50] [--repeat 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_monitor import GpuMonitor  # noqa: E402  (bench/ is on sys.path: this script's folder)

from artannot.data.images import load_image, sha256_file  # noqa: E402
from artannot.data.importer import scan_images  # noqa: E402
from artannot.ml.backbones import build_transform, get_spec, load_backbone, weights_available  # noqa: E402
from artannot.ml.decode_cache import DecodeCache  # noqa: E402
from artannot.ml.device import select_runtime  # noqa: E402
from artannot.ml.features import extract_features  # noqa: E402


def bench_backbone(backbone: str, args, runtime, paths: list[str], cache_root: Path) -> dict:
    gpu = runtime.device.type == "cuda"
    spec = get_spec(backbone)
    items = [(p, sha256_file(p)) for p in paths]
    if args.random_weights:
        model = runtime.prepare(spec.untrained().eval())
    else:
        model = runtime.prepare(load_backbone(backbone))
    transform = build_transform(spec)
    tensors = torch.stack([transform(load_image(p)) for p in paths])

    def sync():
        if gpu:
            torch.cuda.synchronize()

    def raw() -> tuple[float, float | None]:
        with GpuMonitor(runtime.device) as mon:
            t = time.perf_counter()
            with torch.inference_mode(), runtime.autocast():
                for start in range(0, len(tensors), args.batch_size):
                    model.forward_features(runtime.batch(tensors[start: start + args.batch_size])).float().cpu()
            sync()
            seconds = time.perf_counter() - t
        return len(tensors) / seconds, mon.mean

    def app(cache: DecodeCache | None) -> tuple[float, float | None]:
        with GpuMonitor(runtime.device) as mon:
            t = time.perf_counter()
            extract_features(items, backbone=backbone, cache=None, runtime=runtime, batch_size=args.batch_size,
                             model=model, num_workers=args.workers, decode_cache=cache)
            sync()
            seconds = time.perf_counter() - t
        return len(items) / seconds, mon.mean

    raw()  # warm-up: allocator, kernels, autotuning
    cache = DecodeCache(cache_root / backbone)
    app(cache)  # fills the cache
    # Each app run sits between two raw runs and is compared with their mean (a machine whose speed drifts
    # biases neither mode); the median over --repeat rounds is reported.
    raws = [raw()]
    runs: dict[str, list[tuple[float, float, float | None]]] = {"decode": [], "cache-warm": []}
    for _ in range(args.repeat):
        for name, c in (("decode", None), ("cache-warm", cache)):
            ips, util = app(c)
            raws.append(raw())
            around = (raws[-2][0] + raws[-1][0]) / 2
            runs[name].append((ips / around, ips, util))
    out = {"backbone": backbone, "weights": "random" if args.random_weights else "imagenet",
           "raw_images_per_s": round(statistics.median(r for r, _ in raws), 1),
           "raw_runs": [round(r, 1) for r, _ in raws], "gpu_util_raw": raws[0][1]}
    for name, rs in runs.items():
        ratio, ips, util = sorted(rs)[len(rs) // 2]
        out[name] = {"images_per_s": round(ips, 1), "ratio": round(ratio, 3), "ratios": [round(r[0], 3) for r in rs],
                     "gpu_util": util}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="artannot/resources/demo")
    ap.add_argument("--limit", type=int, help="use this many images (the folder's files repeated if needed)")
    ap.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    ap.add_argument("--backbone", help="just this one (same as --backbones B)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: the app's choice)")
    ap.add_argument("--random-weights", action="store_true", help="speed only, where weights are not installed")
    args = ap.parse_args()

    runtime = select_runtime(args.device)
    paths = sorted(str(p) for p in scan_images(Path(args.images)))
    if args.limit:
        paths = (paths * (args.limit // len(paths) + 1))[: args.limit] if args.limit > len(paths) \
            else paths[:: max(1, len(paths) // args.limit)][: args.limit]
    backbones = [args.backbone] if args.backbone else [b for b in args.backbones.split(",") if b]
    report = {"images": len(paths), "runtime": runtime.describe, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "target": 0.9, "results": [], "skipped": []}
    cache_root = Path(tempfile.mkdtemp(prefix="artannot-bench-"))
    try:
        for backbone in backbones:
            if not args.random_weights and not weights_available(backbone):
                report["skipped"].append(f"{backbone}: weights not installed (use --random-weights for its speed)")
                continue
            report["results"].append(bench_backbone(backbone, args, runtime, paths, cache_root))
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
