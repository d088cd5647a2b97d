"""Images/s of the app's fine-tuning loop vs the raw forward/backward on pre-made tensors, same run.

The app path is artannot.ml.finetune.fit itself: safe decoding (once, then kept shrunk in memory), random
crops and flips every epoch, DataLoader, the runtime's fast path (channels_last, bf16 on CPUs that have it,
CUDA AMP with a GradScaler), optimizer + LR schedule, cancel checks and progress. The raw path runs the
same network, optimizer and loss on tensors made beforehand: the ceiling. Target: ratio >= 0.8 on CPU.
The raw path is timed before and after the loop and averaged, so a machine that speeds up or slows down
during the run does not bias the ratio. Prints JSON.
On a GPU the defaults are larger (1024 images, the folder's files repeated; batch 64; 3 epochs) so that
startup costs (worker processes, cuDNN heuristics) are amortised as in a real run.
Usage: python bench/finetune_speed.py [--images artannot/resources/demo] [--limit N] [--epochs N] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artannot.data.importer import scan_images  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="artannot/resources/demo")
    ap.add_argument("--limit", type=int, help="train on this many images (default 96 on CPU, 1024 on a GPU)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, help="default 2 on CPU, 3 on a GPU")
    ap.add_argument("--batch-size", type=int, help="default 16 on CPU, 64 on a GPU")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--random-weights", action="store_true",
                    help="skip the pretrained weights (speed only: e.g. ResNet50 where its weights are not installed)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: the app's choice)")
    args = ap.parse_args()

    torch.manual_seed(0)
    runtime = select_runtime(args.device)
    gpu = runtime.device.type == "cuda"
    args.limit = args.limit or (1024 if gpu else 96)
    args.epochs = args.epochs or (3 if gpu else 2)
    args.batch_size = args.batch_size or (64 if gpu else 16)
    spec = sized_spec(args.backbone, args.image_size)
    paths = sorted(str(p) for p in scan_images(Path(args.images)))
    if args.limit > len(paths):  # repeat the files (decoded once each time they appear, like distinct images)
        paths = (paths * (args.limit // len(paths) + 1))[: args.limit]
    paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    classes = sorted({Path(p).parent.name for p in paths})
    samples = [(p, classes.index(Path(p).parent.name)) for p in paths]
    recipe = dict(DEFAULTS["finetune"])
    cfg = FineTuneConfig(epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                         num_workers=args.workers, optimizer=recipe["optimizer"],
                         weight_decay=recipe["weight_decay"])
    steps = args.epochs * (len(samples) // args.batch_size)

    # Raw: the same network, optimizer and loss on pre-made tensors (nothing but the model's own work).
    raw_model = runtime.prepare(build_network(args.backbone, len(classes), pretrained=not args.random_weights)).train()
    plan = layer_plan(raw_model, "finetune")
    groups = [{"params": list(g.parameters()), "lr": p.lr} for g, p in zip(raw_model.layer_groups(), plan, strict=True)]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if runtime.device.type == "cuda" and runtime.amp_dtype else None
    x = runtime.batch(torch.randn(args.batch_size, 3, spec.input_size, spec.input_size))
    y = torch.randint(0, len(classes), (args.batch_size,), device=runtime.device)

    def raw(n_steps: int) -> float:
        def sync():
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
        sync()
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
        return n_steps * args.batch_size / (time.perf_counter() - t)

    raw(3)  # warm-up: allocator, kernels, autotuning
    raw_before = raw(steps)

    # App: the real loop (its own first steps are its warm-up, as for a user).
    model = build_network(args.backbone, len(classes), pretrained=not args.random_weights)
    t = time.perf_counter()
    result = fit(model, samples, None, cfg, runtime, layer_plan(model, "finetune"), backbone=args.backbone)
    loop_seconds = time.perf_counter() - t
    loop_ips = len(samples) * args.epochs / loop_seconds

    raw_after = raw(steps)
    raw_ips = (raw_before + raw_after) / 2
    print(json.dumps({
        "backbone": args.backbone, "runtime": runtime.describe, "images": len(samples), "epochs": args.epochs,
        "batch_size": args.batch_size, "input_size": spec.input_size,
        "workers": default_train_workers(runtime, True) if args.workers is None else args.workers,
        "raw_images_per_s": round(raw_ips, 2), "raw_before": round(raw_before, 2), "raw_after": round(raw_after, 2),
        "loop_images_per_s": round(loop_ips, 2), "loop_images_per_s_training_only": round(result.images_per_s, 2),
        "loop_seconds": round(loop_seconds, 2), "ratio": round(loop_ips / raw_ips, 3),
        "ratio_training_only": round(result.images_per_s / raw_ips, 3), "target": 0.8,
    }))


if __name__ == "__main__":
    main()
