"""Images/s of the app's fine-tuning loop vs the raw forward/backward on pre-made tensors, same run.

The app path is artannot.ml.finetune.fit itself: safe decoding, random crops and flips every epoch,
DataLoader, the runtime's fast path (channels_last, bf16 on CPUs that have it, CUDA AMP with a
GradScaler), optimizer + LR schedule, cancel checks and progress. It runs three ways:
  memory       the images decoded per run into memory, augmented with PIL in the loader (no decode cache);
  cache-cold   the decode cache empty: each image decoded and shrunk once into it, then cropped and
               flipped on the device (DeviceAugment) -- a project's first run;
  cache-warm   the same with the cache filled -- every later run, and what extraction/prediction share.
The raw path runs the same network, optimizer and loss on tensors made beforehand: the ceiling. It is timed
before and after each app run, which is compared with the mean of the two, so a machine that speeds up or
slows down does not bias the ratio (--repeat N: the median of N). Target: ratio >= 0.9 (CPU and GPU). On a GPU the mean utilization during each run is reported
(torch.cuda.utilization, else nvidia-smi). Backbones whose weights are not installed are skipped (or run
with random weights with --random-weights: the speed is the same). Prints one JSON object.
On a GPU the defaults are larger (1024 images, the folder's files repeated; batch 64; 3 epochs) so that
startup costs (worker processes, cuDNN heuristics) are amortised as in a real run.
Usage: python bench/finetune_speed.py [--images artannot/resources/demo] [--limit N] [--epochs N]
       [--backbones efficientnet_lite0,resnet50] [--modes memory,cache-cold,cache-warm] [--device auto]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_monitor import GpuMonitor  # noqa: E402  (bench/ is on sys.path: this script's folder)

from artannot.data.importer import scan_images  # noqa: E402
from artannot.ml.backbones import weights_available  # noqa: E402
from artannot.ml.decode_cache import DecodeCache  # noqa: E402
from artannot.ml.device import select_runtime  # noqa: E402
from artannot.ml.finetune import (  # noqa: E402
    DEFAULTS,
    FineTuneConfig,
    build_network,
    default_train_workers,
    fit,
    layer_plan,
    sized_spec,
)

MODES = ("memory", "cache-cold", "cache-warm")


def bench_backbone(backbone: str, args, runtime, samples, n_classes: int, cache_root: Path) -> dict:
    gpu = runtime.device.type == "cuda"
    spec = sized_spec(backbone, args.image_size)
    recipe = dict(DEFAULTS["finetune"])
    cfg = FineTuneConfig(epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                         num_workers=args.workers, optimizer=recipe["optimizer"],
                         weight_decay=recipe["weight_decay"])
    steps = args.epochs * (len(samples) // args.batch_size)
    pretrained = not args.random_weights

    # Raw: the same network, optimizer and loss on pre-made tensors (nothing but the model's own work).
    raw_model = runtime.prepare(build_network(backbone, n_classes, pretrained=pretrained)).train()
    plan = layer_plan(raw_model, "finetune")
    groups = [{"params": list(g.parameters()), "lr": p.lr} for g, p in zip(raw_model.layer_groups(), plan, strict=True)]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if gpu and runtime.amp_dtype == torch.float16 else None
    x = runtime.batch(torch.randn(args.batch_size, 3, spec.input_size, spec.input_size))
    y = torch.randint(0, n_classes, (args.batch_size,), device=runtime.device)

    def sync():
        if gpu:
            torch.cuda.synchronize()

    def raw(n_steps: int) -> tuple[float, float | None]:
        sync()
        with GpuMonitor(runtime.device) as mon:
            t = time.perf_counter()
            for _ in range(n_steps):
                with runtime.autocast():
                    logits = raw_model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
            sync()
            seconds = time.perf_counter() - t
        return n_steps * args.batch_size / seconds, mon.mean

    raw(3)  # warm-up: allocator, kernels, autotuning
    raws = [raw(steps)]
    util_raw = raws[0][1]

    # Each app run sits between two raw runs and is compared with their mean: a machine whose speed drifts
    # (other jobs) biases no mode. With --repeat the modes run again and the median ratio is reported.
    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    cache = DecodeCache(cache_root / backbone)
    for _ in range(args.repeat):
        for mode in args.modes:
            if mode == "cache-cold":
                cache.clear()
            model = build_network(backbone, n_classes, pretrained=pretrained)
            with GpuMonitor(runtime.device) as mon:
                t = time.perf_counter()
                result = fit(model, samples, None, cfg, runtime, layer_plan(model, "finetune"), backbone=backbone,
                             decode_cache=None if mode == "memory" else cache)
                sync()
                seconds = time.perf_counter() - t
            del model
            raws.append(raw(steps))
            around = (raws[-2][0] + raws[-1][0]) / 2
            ips = len(samples) * args.epochs / seconds
            runs[mode].append({"images_per_s": ips, "raw": around, "ratio": ips / around, "seconds": seconds,
                               "training_only": result.images_per_s, "gpu_util": mon.mean})

    out = {"backbone": backbone, "weights": "imagenet" if pretrained else "random", "input_size": spec.input_size,
           "raw_images_per_s": round(statistics.median(r for r, _ in raws), 2),
           "raw_runs": [round(r, 2) for r, _ in raws], "gpu_util_raw": util_raw}
    for mode, rs in runs.items():
        mid = sorted(rs, key=lambda r: r["ratio"])[len(rs) // 2]
        out[mode] = {"images_per_s": round(mid["images_per_s"], 2), "raw_around": round(mid["raw"], 2),
                     "ratio": round(mid["ratio"], 3), "ratios": [round(r["ratio"], 3) for r in rs],
                     "training_only_images_per_s": round(mid["training_only"], 2),
                     "ratio_training_only": round(mid["training_only"] / mid["raw"], 3),
                     "seconds": round(mid["seconds"], 2), "gpu_util": mid["gpu_util"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="artannot/resources/demo")
    ap.add_argument("--limit", type=int, help="train on this many images (default 96 on CPU, 1024 on a GPU)")
    ap.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    ap.add_argument("--backbone", help="just this one (same as --backbones B)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, help="default 2 on CPU, 3 on a GPU")
    ap.add_argument("--batch-size", type=int, help="default 16 on CPU, 64 on a GPU")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--random-weights", action="store_true",
                    help="skip the pretrained weights (speed only: e.g. ResNet50 where its weights are not installed)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: the app's choice)")
    ap.add_argument("--repeat", type=int, default=1, help="run the modes this many times; median ratio")
    ap.add_argument("--cache-dir", help="decode cache location (default: a temporary folder, deleted after)")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in args.modes if m not in MODES]:
        ap.error(f"unknown mode(s) {', '.join(unknown)}")

    torch.manual_seed(0)
    runtime = select_runtime(args.device)
    gpu = runtime.device.type == "cuda"
    args.limit = args.limit or (1024 if gpu else 96)
    args.epochs = args.epochs or (3 if gpu else 2)
    args.batch_size = args.batch_size or (64 if gpu else 16)
    paths = sorted(str(p) for p in scan_images(Path(args.images)))
    if args.limit > len(paths):  # repeat the files (decoded once each time they appear, like distinct images)
        paths = (paths * (args.limit // len(paths) + 1))[: args.limit]
    paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    classes = sorted({Path(p).parent.name for p in paths})
    samples = [(p, classes.index(Path(p).parent.name)) for p in paths]
    backbones = [args.backbone] if args.backbone else [b for b in args.backbones.split(",") if b]
    report = {"runtime": runtime.describe, "threads": torch.get_num_threads(), "images": len(samples),
              "epochs": args.epochs, "batch_size": args.batch_size,
              "workers": default_train_workers(runtime, True) if args.workers is None else args.workers,
              "target": 0.9, "results": [], "skipped": []}
    cache_root = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="artannot-bench-"))
    try:
        for backbone in backbones:
            if not args.random_weights and not weights_available(backbone):
                report["skipped"].append(f"{backbone}: weights not installed (use --random-weights for its speed)")
                continue
            report["results"].append(bench_backbone(backbone, args, runtime, samples, len(classes), cache_root))
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_root, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
