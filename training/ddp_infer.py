"""Feature extraction and prediction over a whole project on several GPUs (or CPU processes) with torchrun.

    torchrun --standalone --nproc_per_node 4 training/ddp_infer.py PROJECT --extract [--backbone B]
    torchrun --standalone --nproc_per_node 4 training/ddp_infer.py PROJECT --predict [--model ID]

Process 0 opens the project, lists its images (path, sha256) and, for --extract, those the feature cache
lacks, and sends the list to every process (torch.distributed). Process r takes every world-th image from
the r-th, runs the app's own code on it (artannot.ml.features.extract_features, or
artannot.ml.classify.methods.score_model for a stored model) and writes its shard file
(features-rank{r}.npz / predictions-rank{r}.npz) into --shard-dir. Process 0 merges the shards: features
into the project's feature cache, predictions into the project's predictions table (whole images per short
transaction, so the window's edits never wait long), and deletes the shard files. A shard written where process 0 cannot see it (another machine's disk) is sent
to it over the process group instead. Images are decoded once into the decode cache (several processes
fill it safely). Only process 0 writes the project; for --predict every process reads the model's row and
files, so each machine needs the project (file and .d folder) at the same path: its own local copy
(e.g. rsync) on other machines, never one SQLite file shared over the network by several writers.
Both flags may be given: extraction runs first. Prints one JSON line (process 0).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from artannot.errors import ArtAnnotError  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project")
    p.add_argument("--extract", action="store_true", help="cache the backbone's features of every image")
    p.add_argument("--predict", action="store_true", help="recompute a model's predictions of every image")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--model", type=int, help="--predict: the model (default: the project's active model)")
    p.add_argument("--batch-size", type=int, default=32, help="images per process and batch")
    p.add_argument("--shard-dir", help="where processes write their shards (default: PROJECT.artannot.d/shards;"
                                       " on several machines a folder they all see avoids sending them)")
    p.add_argument("--keep-shards", action="store_true", help="leave the shard files after merging")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backend", choices=["nccl", "gloo"], help="default: nccl on GPUs, gloo on CPUs")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    return p.parse_args(argv)


_OBJECTS = None  # the process group for Python objects: gloo (CPU) even when the tensors go over NCCL


def _broadcast(obj, rank: int):
    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=_OBJECTS)
    return box[0]


def _agree(error: str | None, world: int) -> None:
    """Every process learns whether one failed, and all raise the same error (none waits forever)."""
    errors = [None] * world
    dist.all_gather_object(errors, error, group=_OBJECTS)
    first = next((e for e in errors if e), None)
    if first:
        raise ArtAnnotError(first)


def _save_shard(path: Path, **arrays) -> None:
    """np.savez to a temporary file beside `path`, then os.replace: a reader sees the whole shard or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _collect(path_of, rank: int, world: int) -> list[dict[str, np.ndarray]] | None:
    """Process 0: every shard, read from its file, or sent over the process group when it cannot see it."""
    missing = _broadcast([r for r in range(world) if not path_of(r).is_file()] if rank == 0 else None, rank)
    payload = path_of(rank).read_bytes() if rank in missing else None
    gathered = [None] * world if rank == 0 else None
    if missing:
        dist.gather_object(payload, gathered, dst=0, group=_OBJECTS)
    if rank != 0:
        return None
    shards = []
    for r in range(world):
        with np.load(io.BytesIO(gathered[r]) if r in missing else path_of(r), allow_pickle=False) as z:
            shards.append({k: z[k] for k in z.files})
    return shards


def _merge_rows(n: int, shards: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """Put each shard's rows (shard r holds rows r, r + world, ...) back in order."""
    first = shards[0][key]
    out = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
    for r, shard in enumerate(shards):
        out[r:: len(shards)] = shard[key]
    return out


def extract(args, project, runtime, rank: int, world: int, shard_dir: Path, cache_dir: Path) -> dict | None:
    from artannot.ml.backbones import get_spec
    from artannot.ml.decode_cache import decode_cache_for, prune_project
    from artannot.ml.features import FeatureCache, extract_features
    from artannot.store import repo

    get_spec(args.backbone)  # an unknown backbone fails in every process, before any work
    todo = None
    if rank == 0:
        items = [(path, sha) for _, path, sha in repo.all_images(project.conn)]
        cache = FeatureCache(project.feature_cache_path)
        try:
            cached = cache.get_many(args.backbone, [sha for _, sha in items])
        finally:
            cache.close()
        todo = [(p, sha) for p, sha in dict.fromkeys(items) if sha not in cached]  # one row per distinct image
        stats = {"images": len(items), "cached_before": len(items) - len(todo)}
    todo = _broadcast(todo, rank)
    mine = todo[rank::world]
    t = time.perf_counter()
    error = None
    try:
        feats, ok = extract_features(mine, backbone=args.backbone, cache=None, runtime=runtime,
                                     batch_size=args.batch_size, num_workers=args.num_workers,
                                     decode_cache=decode_cache_for(cache_dir))
    except ArtAnnotError as exc:
        error = f"process {rank}: {exc}"
    _agree(error, world)
    seconds = time.perf_counter() - t
    path_of = lambda r: shard_dir / f"features-rank{r}.npz"  # noqa: E731
    _save_shard(path_of(rank), features=feats.astype(np.float32), ok=ok, seconds=np.array([seconds]))
    dist.barrier(group=_OBJECTS)
    shards = _collect(path_of, rank, world)
    if rank != 0:
        return None
    all_feats = _merge_rows(len(todo), shards, "features")
    all_ok = _merge_rows(len(todo), shards, "ok")
    cache = FeatureCache(project.feature_cache_path)
    try:
        cache.put_many(args.backbone, {sha: all_feats[i] for i, (_, sha) in enumerate(todo) if all_ok[i]})
    finally:
        cache.close()
    stats["decode_cache_pruned"] = prune_project(project.conn, cache_dir)  # entries of images gone since
    return {**stats, "extracted": int(all_ok.sum()), "unreadable": int((~all_ok).sum()), "backbone": args.backbone,
            "seconds_per_process": [round(float(s["seconds"][0]), 2) for s in shards]}


def predict(args, project, runtime, rank: int, world: int, shard_dir: Path, cache_dir: Path) -> dict | None:
    from artannot.ml.classify.methods import score_model
    from artannot.ml.classify.training import ranked_rows
    from artannot.store import repo
    from artannot.store.db import connect

    plan = None
    if rank == 0:
        model_id = args.model if args.model is not None else project.active_model_id()
        if model_id is None or repo.get_model(project.conn, model_id) is None:
            plan = {"error": "no trained model yet: train one first" if model_id is None
                    else f"no model {model_id} in {project.path.name}"}
        else:
            plan = {"model": int(model_id), "everything": repo.all_images(project.conn)}
    plan = _broadcast(plan, rank)
    if "error" in plan:
        raise ArtAnnotError(plan["error"])
    # The other processes read the model's row (and, for an ensemble, its members') from their own copy.
    conn = project.conn if rank == 0 else connect(Path(args.project).expanduser().resolve())
    try:
        row = repo.get_model(conn, plan["model"])
        if row is None:
            raise ArtAnnotError(f"no model {plan['model']} in its copy of the project")
        everything = plan["everything"]
        mine = [(path, sha) for _, path, sha in everything[rank::world]]
        t = time.perf_counter()
        scores, class_ids, ok = score_model(conn, cache_dir, row, mine, runtime)
        seconds = time.perf_counter() - t
    except ArtAnnotError as exc:
        error = f"process {rank}: {exc}"
    else:
        error = None
    finally:
        if rank != 0:
            conn.close()
    _agree(error, world)
    path_of = lambda r: shard_dir / f"predictions-rank{r}.npz"  # noqa: E731
    _save_shard(path_of(rank), scores=np.asarray(scores, dtype=np.float64), ok=np.asarray(ok, dtype=bool),
                class_ids=np.asarray(class_ids, dtype=np.int64), seconds=np.array([seconds]))
    dist.barrier(group=_OBJECTS)
    shards = _collect(path_of, rank, world)
    if rank != 0:
        return None
    if any(not np.array_equal(s["class_ids"], shards[0]["class_ids"]) for s in shards):
        raise ArtAnnotError("the processes scored different classes: their project copies differ")
    all_scores = _merge_rows(len(everything), shards, "scores")
    all_ok = _merge_rows(len(everything), shards, "ok")
    _, rows = ranked_rows(everything, all_scores, all_ok, [int(c) for c in shards[0]["class_ids"]])
    repo.write_predictions(project.conn, plan["model"], rows)  # whole images per short transaction
    return {"model": plan["model"], "images": len(everything), "predicted": int(all_ok.sum()),
            "unreadable": int((~all_ok).sum()),
            "seconds_per_process": [round(float(s["seconds"][0]), 2) for s in shards]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not (args.extract or args.predict):
        print("ddp_infer: error: give --extract, --predict or both", file=sys.stderr)
        return 2
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = args.backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    global _OBJECTS
    _OBJECTS = dist.new_group(backend="gloo") if backend != "gloo" else None
    if not use_cuda:  # CPU processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    report: dict = {"world_size": world}
    project = None
    code = 0
    try:
        from artannot.ml.device import select_runtime
        from artannot.project import Project

        runtime = select_runtime(f"cuda:{local_rank}" if use_cuda else "cpu")
        if rank == 0:
            project = Project(args.project)  # process 0 alone opens (and writes) the project
        where = None
        if rank == 0:
            job = os.environ.get("TORCHELASTIC_RUN_ID") or uuid.uuid4().hex[:12]
            root = Path(args.shard_dir).expanduser() if args.shard_dir else project.cache_dir / "shards"
            where = {"shards": str(root.resolve() / f"job-{job}"), "cache_dir": str(project.cache_dir)}
        where = _broadcast(where, rank)
        shard_dir, cache_dir = Path(where["shards"]), Path(where["cache_dir"])
        try:
            if args.extract:
                out = extract(args, project, runtime, rank, world, shard_dir, cache_dir)
                if out is not None:
                    report["extract"] = out
            if args.predict:
                out = predict(args, project, runtime, rank, world, shard_dir, cache_dir)
                if out is not None:
                    report["predict"] = out
        finally:
            dist.barrier(group=_OBJECTS)
            if rank == 0 and not args.keep_shards:
                shutil.rmtree(shard_dir, ignore_errors=True)
    except ArtAnnotError as exc:
        print(f"ddp_infer rank {rank}: error: {exc}", file=sys.stderr)
        code = 2
    finally:
        if project is not None:
            project.close()
        dist.destroy_process_group()
    if rank == 0 and code == 0:
        print(json.dumps(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
