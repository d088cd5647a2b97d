"""Train a project's network on several GPUs (or CPU processes) with torchrun and DistributedDataParallel.

    torchrun --standalone --nproc_per_node 4 training/ddp.py PROJECT --method finetune --epochs 10

The same code as `artannot train` runs in every process: artannot.ml.finetune.fit sees the initialized
process group, wraps the network in DistributedDataParallel, shards every epoch with a DistributedSampler
and reduces the metrics, so early stopping decides the same in every process. Process 0 alone computes
the predictions and stores the model in the project. --batch-size is per process. Without a GPU the gloo
backend runs the same thing on CPU processes (how the test suite checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from artannot.errors import ArtAnnotError  # noqa: E402
from artannot.project import Project  # noqa: E402

NETWORK_METHODS = ("finetune", "adaptive", "frozen", "double")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project")
    p.add_argument("--method", default="finetune", choices=NETWORK_METHODS)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--epochs", type=int)
    p.add_argument("--then-svm", action="store_true")
    p.add_argument("--intermediate", help="double: the project to fine-tune on first")
    p.add_argument("--batch-size", type=int, help="images per process and step")
    p.add_argument("--image-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backend", choices=["nccl", "gloo"], help="default: nccl on GPUs, gloo on CPUs")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(args.backend or ("nccl" if use_cuda else "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    if not use_cuda:  # CPU processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    options: dict = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    for key in ("batch_size", "image_size", "intermediate"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.lr is not None:
        options["low_lr" if args.method == "adaptive" else "lr"] = args.lr
    try:
        with Project(args.project) as project:
            result = project.train(method=args.method, backbone=args.backbone, epochs=args.epochs,
                                   device=f"cuda:{local_rank}" if use_cuda else "cpu", then_svm=args.then_svm,
                                   options=options)
    except ArtAnnotError as exc:
        print(f"ddp rank {rank}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    if rank == 0 and result is not None:
        print(json.dumps({"model": result.model_id, "world_size": world, "metrics": {
            k: result.metrics.get(k) for k in ("top1", "top5", "macro_f1", "n", "seconds")},
            "curves": result.metrics.get("curves", [])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
