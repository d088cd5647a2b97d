"""The fine-tuning loop every network method shares (finetune, adaptive, frozen, double, training/ddp.py).

`fit` trains a network from networks.build_network following a layer plan (networks.layer_plan: LR,
re-initialization or freezing per layer group) with augmentation, mixed precision (CUDA fp16 with a
GradScaler, CPU bf16 where the CPU has it), a cosine or step schedule and early stopping on a validation
split; it checks `cancel` every batch and reports `progress(done, total, stage)`. With a decode cache
(ml/decode_cache.py) each image is decoded and shrunk once for good, shared with later runs, extraction and
prediction, and cropped and flipped on the device; without one images are decoded once per run and kept
(shrunk) in memory, workers crop and flip them as uint8 and the device converts and normalizes. Either
way 4x fewer bytes per image cross to the device than as float. Under torchrun it runs as DistributedDataParallel: the same function,
sharded data, metrics reduced across processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

from artannot.data.images import load_image
from artannot.errors import ArtAnnotError, Cancelled, ModelError
from artannot.ml.backbones import BackboneSpec, build_transform
from artannot.ml.decode_cache import (  # noqa: F401  (Normalizer re-exported)
    DecodeCache,
    DeviceAugment,
    Normalizer,
    Recipe,
    eval_recipe,
    pad_collate,
    shrunk_recipe,
)
from artannot.ml.device import Runtime, loader_workers
from artannot.ml.networks import (  # noqa: F401  (re-exported: the fine-tuning API in one import)
    DEFAULTS,
    GroupPlan,
    build_network,
    head_scores,
    layer_plan,
    load_network,
    network_features,
    plan_modules,
    reinitialize,
    replace_head,
    save_network,
    sized_spec,
)

Progress = Callable[[int, int, str], None]
Target = int | np.ndarray  # a class index, or a multi-hot vector for tags


# -- configuration and result -------------------------------------------------------------------------------


@dataclass
class FineTuneConfig:
    """How to train: epochs, batches, optimizer, schedule, early stopping, resolution, data loading."""

    epochs: int = 8
    batch_size: int = 16
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine | step | constant
    warmup: float = 0.05  # fraction of all steps with a linear LR ramp
    step_epochs: int | None = None  # step schedule: LR x step_gamma every step_epochs (default epochs // 3)
    step_gamma: float = 0.1
    patience: int = 3  # early stopping: epochs without a better validation loss
    label_smoothing: float = 0.1  # helps with noisy labels
    augment: bool = True  # random crops and flips; False: every epoch sees the evaluation crop (resize + center)
    nesterov: bool = True  # SGD's Nesterov momentum; False: plain momentum (Caffe's SGD, as the papers used)
    bn_momentum: float = 0.1  # at least this batch-norm momentum in trained groups
    image_size: int | None = None  # train/predict at this side instead of the backbone's (tests, speed)
    num_workers: int | None = None
    memory_mb: int = 1024  # images kept decoded (shrunk) in memory across epochs, up to this much
    seed: int = 0
    multilabel: bool = False  # sigmoid outputs with binary cross-entropy (tags)
    deadline: float | None = None  # time.monotonic() after which training stops (auto's time budget)
    augment_index: str | None = None  # stylized copies of the train images (ml/style.py), added as samples

    @classmethod
    def from_options(cls, options: dict, **overrides) -> FineTuneConfig:
        """A config from a method's options dict, ignoring keys that are not config fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in {**options, **overrides}.items() if k in names and v is not None}
        return cls(**values)


@dataclass
class FitResult:
    """What a fine-tuning run did: curves per epoch, which epoch was kept, why it stopped, how fast."""

    curves: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "all epochs run"
    seconds: float = 0.0
    images_per_s: float = 0.0
    plan: list[dict] = field(default_factory=list)


# -- data ----------------------------------------------------------------------------------------------------


class _DecodeShrunk(Dataset):
    """Decode each image once and shrink it (shorter side at most `side`) to keep it in memory."""

    def __init__(self, paths: Sequence[str], side: int):
        self.paths, self.side = list(paths), side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.paths[i], min_side=self.side)  # a huge scan shrinks on load
        except (ArtAnnotError, OSError):
            return None
        w, h = img.size
        scale = self.side / min(w, h)
        if scale < 1.0:
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)
        return np.asarray(img.convert("RGB"))


def _as_list(batch):
    return batch


def decode_all(paths: Sequence[str], side: int, *, memory_mb: int, num_workers: int,
               progress: Progress | None = None, cancel: threading.Event | None = None) -> list:
    """Decoded, shrunk uint8 images (None: unreadable; False: left on disk once the memory budget is spent)."""
    out: list = [False] * len(paths)
    budget = memory_mb * 1024 * 1024
    used = 0
    loader = DataLoader(_DecodeShrunk(paths, side), batch_size=8, **loader_workers(num_workers), collate_fn=_as_list)
    pos = 0
    for batch in loader:
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        for arr in batch:
            if arr is not None:
                used += arr.nbytes
            if used > budget:
                return out  # the rest is decoded from disk each epoch
            out[pos] = arr
            pos += 1
        if progress is not None:
            progress(pos, len(paths), "decoding images")
    return out


def uint8_transform(spec: BackboneSpec, train: bool) -> tuple[T.Compose, bool]:
    """The backbone's transform up to the crop, ending in a uint8 tensor (normalized later, on the device).

    Returns (transform, True); (the full float transform, False) if its shape is not the expected one.
    """
    full = build_transform(spec, train=train)
    steps = list(full.transforms)
    if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
        return T.Compose([*steps[:-2], T.PILToTensor()]), True
    return full, False


class EpochBatches(Sampler):
    """Index batches for all epochs in a row: a fresh permutation per epoch, sharded across processes.

    Every process gets the same number of batches (the permutation is padded like DistributedSampler's).
    The last partial batch of an epoch is dropped when an epoch has at least 4 full ones (fewer distinct
    shapes, no tiny batch for batch norm; the shuffle changes which images wait), else only if it would
    hold a single image.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, *, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.epochs, self.seed, self.rank, self.world = n, batch_size, epochs, seed, rank, world
        self.per_rank = math.ceil(n / world)
        if self.per_rank < 2:
            raise ModelError("fine-tuning needs at least two training images per process")
        full, rest = divmod(self.per_rank, batch_size)
        self.keep_partial = rest > 1 and full < 4
        self.steps_per_epoch = max(1, full + (1 if self.keep_partial else 0))

    def epoch(self, e: int) -> list[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + e)).tolist()
        order = (order * math.ceil(self.per_rank * self.world / self.n))[: self.per_rank * self.world]
        mine = order[self.rank:: self.world]
        out = [mine[i: i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        return out[: self.steps_per_epoch]

    def __iter__(self):
        for e in range(self.epochs):
            yield from self.epoch(e)

    def __len__(self) -> int:
        return self.epochs * self.steps_per_epoch


class _Images(Dataset):
    """(image tensor, target, ok) from memory where decoded, else from disk; unreadable -> ok False."""

    def __init__(self, paths: Sequence[str], targets: Sequence[Target], decoded: Sequence, transform, size: int,
                 as_uint8: bool = False):
        self.paths, self.targets, self.decoded = list(paths), list(targets), decoded
        self.transform, self.size, self.as_uint8 = transform, size, as_uint8

    def __len__(self) -> int:
        return len(self.paths)

    def _target(self, i: int) -> torch.Tensor:
        t = self.targets[i]
        return torch.as_tensor(t, dtype=torch.float32) if isinstance(t, np.ndarray) else torch.tensor(int(t))

    def __getitem__(self, i: int):
        arr = self.decoded[i]
        try:
            if arr is None:
                raise OSError("unreadable")
            img = Image.fromarray(arr) if arr is not False else load_image(self.paths[i], min_side=2 * self.size)
            return self.transform(img), self._target(i), True
        except (ArtAnnotError, OSError):
            dtype = torch.uint8 if self.as_uint8 else torch.float32
            return torch.zeros(3, self.size, self.size, dtype=dtype), self._target(i), False


class _CachedImages(Dataset):
    """(image, target, ok) from the decode cache: a shrunk recipe gives H x W x 3 arrays (pad_collate, then
    DeviceAugment crops them), an eval recipe 3 x crop x crop uint8 tensors; unreadable -> ok False."""

    def __init__(self, paths: Sequence[str], targets: Sequence[Target], hashes: Sequence[str | None],
                 ok: Sequence[bool], cache: DecodeCache, recipe: Recipe):
        self.paths, self.targets, self.hashes, self.ok = list(paths), list(targets), list(hashes), list(ok)
        self.cache, self.recipe = cache, recipe

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        t = self.targets[i]
        target = torch.as_tensor(t, dtype=torch.float32) if isinstance(t, np.ndarray) else torch.tensor(int(t))
        side = self.recipe.crop if self.recipe.kind == "eval" else self.recipe.resize
        arr, good = None, False
        if self.ok[i] and self.hashes[i] is not None:
            try:  # a hit, or decoded again when the entry was evicted since the warm-up
                arr, good = self.cache.load(self.paths[i], self.hashes[i], self.recipe), True
            except (ArtAnnotError, OSError):
                arr, good = None, False
        if arr is None:
            arr = np.zeros((side, side, 3), dtype=np.uint8)
        if self.recipe.kind == "eval":
            return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1), target, good
        return arr, target, good


def _warm_cache(cache: DecodeCache, paths: list[str], hashes: list[str | None], n_train: int, train_recipe: Recipe,
                val_recipe: Recipe, workers: int, rank: int, world: int, progress: Progress | None,
                cancel: threading.Event | None) -> tuple[np.ndarray, list[str | None]]:
    """Fill the decode cache for the train (train_recipe) and val (val_recipe) images; (ok mask, sha256s).

    Under torchrun each process first decodes its own share, then (after a barrier) checks the rest,
    which on a shared disk are hits: every image is decoded once, by one process."""
    items = list(zip(paths, hashes, strict=True))
    recipes = [train_recipe] * n_train + [val_recipe] * (len(items) - n_train)
    ok = np.zeros(len(items), dtype=bool)
    shas: list[str | None] = list(hashes)
    passes = [list(range(rank, len(items), world)), list(range(len(items)))] if world > 1 else [list(range(len(items)))]
    for k, idx in enumerate(passes):
        if k == 1:
            dist.barrier()
        for recipe in dict.fromkeys((train_recipe, val_recipe)):
            sel = [i for i in idx if recipes[i] == recipe]
            if not sel:
                continue
            got, got_sha = cache.warm([(items[i][0], shas[i]) for i in sel], recipe, num_workers=workers,
                                      progress=progress, cancel=cancel)
            for i, g, sha in zip(sel, got, got_sha, strict=True):
                ok[i], shas[i] = g, sha
    return ok, shas


def default_train_workers(runtime: Runtime, in_memory: bool) -> int:
    """Loader processes: on a GPU enough to feed it; on a CPU none when images are already decoded
    (augmenting a decoded image costs a few ms, a worker would take a core from the model)."""
    cores = os.cpu_count() or 2
    if runtime.device.type == "cuda":
        return max(2, min(8, cores - 1))
    if in_memory or cores <= 2:
        return 0
    return max(1, min(4, cores // 4))


# -- the loop ----------------------------------------------------------------------------------------------


def dist_info() -> tuple[bool, int, int]:
    """(distributed?, rank, world size)."""
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def lr_factor(cfg: FineTuneConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup * total)
    step_epochs = cfg.step_epochs or max(1, cfg.epochs // 3)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        if cfg.schedule == "step":
            return cfg.step_gamma ** ((step // steps_per_epoch) // step_epochs)
        return 1.0

    if cfg.schedule not in ("cosine", "step", "constant"):
        raise ModelError(f"unknown LR schedule {cfg.schedule!r}; choose cosine, step or constant")
    return factor


def _optimizer(cfg: FineTuneConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=bool(cfg.nesterov) and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    raise ModelError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def _loss(logits: torch.Tensor, y: torch.Tensor, good: torch.Tensor, cfg: FineTuneConfig,
          smoothing: float) -> torch.Tensor:
    """Mean loss over the readable images of a batch."""
    logits = logits.float()
    if cfg.multilabel:
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    else:
        per = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)
    good = good.to(per.dtype)
    return (per * good).sum() / good.sum().clamp(min=1.0)


def _check_stop(cfg: FineTuneConfig, cancel: threading.Event | None) -> str | None:
    if cancel is not None and cancel.is_set():
        return "cancel"
    if cfg.deadline is not None and time.monotonic() > cfg.deadline:
        return "time budget"
    return None


def fit(model: nn.Module, train: Sequence[tuple[str, Target]], val: Sequence[tuple[str, Target]] | None,
        cfg: FineTuneConfig, runtime: Runtime, plan: Sequence[GroupPlan], *, backbone: str,
        progress: Progress | None = None, cancel: threading.Event | None = None,
        decode_cache: DecodeCache | None = None, hashes: Sequence[str] | None = None) -> FitResult:
    """Train `model` (a network from build_network) in place on (path, target) samples; returns the curves.

    With a validation set the weights of the epoch with the lowest validation loss are kept, and training
    stops after `patience` epochs without improvement. Raises Cancelled when `cancel` is set.

    With a `decode_cache` (decode_cache.decode_cache_for(project cache folder)) each image is decoded and
    shrunk once into the cache, shared with later runs, extraction and prediction; the random crops and
    flips then run on the device (DeviceAugment) and loader workers only read memory-mapped entries.
    `hashes`: the sha256 of the train + val images in order (computed from the files when not given).
    Without one, images are decoded into memory per run (up to cfg.memory_mb) and augmented with PIL.
    """
    start = time.perf_counter()
    distributed, rank, world = dist_info()
    if not train:
        raise ModelError("no readable training images")
    if cfg.augment_index:  # style augmentation: each train image's stylized copies, with its target
        from artannot.ml.style import augmented

        train = list(train) + augmented(train, cfg.augment_index)
    torch.manual_seed(cfg.seed)
    spec = sized_spec(backbone, cfg.image_size)
    groups = plan_modules(model, plan)  # its layer groups, or single layers (a per-layer plan)
    for group, p in zip(groups, plan, strict=True):
        if p.reinit:
            reinitialize(group)
        for param in group.parameters():
            param.requires_grad_(not p.frozen)
        if not p.frozen:
            # TF-style BN momentum (0.01) assumes 100k+ steps; with a few hundred, the running statistics
            # would lag far behind the weights (and stay near 0/1 after a re-init): evaluation would suffer.
            for m in group.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None:
                    m.momentum = max(m.momentum, cfg.bn_momentum)
    model = runtime.prepare(model)
    grouped: set[int] = set()
    param_groups = []
    for group, p in zip(groups, plan, strict=True):
        params = [q for q in group.parameters() if q.requires_grad and id(q) not in grouped]
        grouped.update(id(q) for q in group.parameters())
        if params and not p.frozen:
            param_groups.append({"params": params, "lr": p.lr, "name": p.name})
    rest = [q for q in model.parameters() if id(q) not in grouped and q.requires_grad]
    if rest:  # parameters outside every group (none for the bundled backbones) train at the body's LR
        param_groups.append({"params": rest, "lr": plan[len(plan) // 2].lr, "name": "other"})
    if not param_groups:
        raise ModelError("every layer group is frozen: nothing to train")
    optimizer = _optimizer(cfg, param_groups)

    # Decode once (shrunk to 1.5x the resize side: enough for random crops), augment every epoch.
    all_paths = [p for p, _ in train] + [p for p, _ in (val or [])]
    cuda = runtime.device.type == "cuda"
    normalize = Normalizer(spec, runtime.device)
    augment: DeviceAugment | None = None
    collate = None
    if decode_cache is not None:
        train_recipe = shrunk_recipe(round(spec.resize_size * 1.5)) if cfg.augment else eval_recipe(spec)
        known = list(hashes) if hashes is not None and len(hashes) == len(all_paths) else [None] * len(all_paths)
        warm_workers = default_train_workers(runtime, False) if cfg.num_workers is None else cfg.num_workers
        ok, shas = _warm_cache(decode_cache, all_paths, known, len(train), train_recipe, eval_recipe(spec),
                               warm_workers, rank, world, progress, cancel)
        workers = default_train_workers(runtime, True) if cfg.num_workers is None else cfg.num_workers
        train_ds = _CachedImages([p for p, _ in train], [t for _, t in train], shas[: len(train)], ok[: len(train)],
                                 decode_cache, train_recipe)
        if cfg.augment:
            augment = DeviceAugment(spec, runtime.device, seed=cfg.seed + rank)
            collate = pad_collate
    else:
        decoded = decode_all(all_paths, round(spec.resize_size * 1.5), memory_mb=cfg.memory_mb,
                             num_workers=default_train_workers(runtime, False) if cfg.num_workers is None
                             else cfg.num_workers, progress=progress, cancel=cancel)
        in_memory = all(d is not False for d in decoded)
        workers = default_train_workers(runtime, in_memory) if cfg.num_workers is None else cfg.num_workers
        train_tf, as_uint8 = uint8_transform(spec, train=bool(cfg.augment))
        train_ds = _Images([p for p, _ in train], [t for _, t in train], decoded[: len(train)], train_tf,
                           spec.input_size, as_uint8)
    # One loader over every epoch's batches: workers prefetch the next epoch while this one ends and
    # validation runs, instead of restarting (first-batch latency) at each epoch.
    batches = EpochBatches(len(train_ds), cfg.batch_size, cfg.epochs, seed=cfg.seed, rank=rank, world=world)
    loader = DataLoader(train_ds, batch_sampler=batches, **loader_workers(workers), pin_memory=cuda,
                        collate_fn=collate)
    val_loader = None
    if val:
        if decode_cache is not None:
            val_ds = _CachedImages([p for p, _ in val], [t for _, t in val], shas[len(train):], ok[len(train):],
                                   decode_cache, eval_recipe(spec))
        else:
            val_ds = _Images([p for p, _ in val], [t for _, t in val], decoded[len(train):],
                             uint8_transform(spec, train=False)[0], spec.input_size, as_uint8)
        val_sampler = DistributedSampler(val_ds, num_replicas=world, rank=rank, shuffle=False) \
            if distributed else None
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, sampler=val_sampler, **loader_workers(workers),
                                pin_memory=cuda, persistent_workers=workers > 0)
    steps = batches.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
    scaler = torch.amp.GradScaler("cuda") if cuda and runtime.amp_dtype == torch.float16 else None
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[runtime.device.index] if cuda else None)
    frozen_modules = [g for g, p in zip(groups, plan, strict=True) if p.frozen]

    result = FitResult(plan=[dataclasses.asdict(p) for p in plan])
    best_loss, best_state, bad_epochs = math.inf, None, 0
    total = cfg.epochs * steps
    seen = 0
    train_time = 0.0
    stream = iter(loader)
    for epoch in range(cfg.epochs):
        model.train()
        for g in frozen_modules:  # frozen layers keep their ImageNet batch-norm statistics too
            g.eval()
        stage = f"fine-tuning epoch {epoch + 1}/{cfg.epochs}"
        sums = torch.zeros(3, device=runtime.device)  # loss sum, correct, count
        t0 = time.perf_counter()
        stop = None
        for b in range(steps):
            stop = None if distributed else _check_stop(cfg, cancel)
            if stop == "cancel":
                raise Cancelled("training cancelled")
            if stop:
                break
            if augment is not None:  # padded uint8 images: crop, flip and normalize on the device
                x, sizes, y, good = next(stream)
                x = runtime.batch(augment(x.to(runtime.device, non_blocking=True), sizes))
            else:
                x, y, good = next(stream)
                x = normalize(runtime.batch(x))
            y, good = y.to(runtime.device, non_blocking=True), good.to(runtime.device)
            with runtime.autocast():
                logits = net(x)
            loss = _loss(logits, y, good, cfg, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            with torch.no_grad():
                n_good = good.sum()
                hits = (logits.argmax(1) == y).logical_and(good).sum() if not cfg.multilabel else n_good * 0
                sums += torch.stack([loss.detach() * n_good, hits.float(), n_good.float()])
            seen += len(x)
            if progress is not None:
                progress(epoch * steps + b + 1, total, stage)
        train_time += time.perf_counter() - t0
        if distributed:
            flag = torch.tensor([1.0 if _check_stop(cfg, cancel) else 0.0], device=runtime.device)
            dist.all_reduce(flag)
            stop = "time budget" if flag.item() > 0 else None
            dist.all_reduce(sums)
        tl, tc, tn = sums.tolist()
        row = {"epoch": epoch + 1, "train_loss": tl / max(tn, 1), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - start, 2)}
        if not cfg.multilabel:
            row["train_top1"] = tc / max(tn, 1)
        if val_loader is not None:
            vl, vacc = _validate(model, val_loader, runtime, cfg, distributed, normalize)
            row["val_loss"] = vl
            if vacc is not None:
                row["val_top1"] = vacc
            if vl < best_loss - 1e-4:
                best_loss, bad_epochs, result.best_epoch = vl, 0, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
        else:
            result.best_epoch = epoch + 1
        result.curves.append(row)
        if stop:
            result.stopped = stop
            break
        if val_loader is not None and bad_epochs >= cfg.patience:
            result.stopped = f"early stopping (no better validation loss for {cfg.patience} epochs)"
            break
    del stream  # stops the loader's workers (and their prefetch of epochs that will not run)
    if best_state is not None and result.best_epoch != len(result.curves):
        model.load_state_dict(best_state)
    if progress is not None:
        progress(total, total, "fine-tuning done")
    result.seconds = time.perf_counter() - start
    result.images_per_s = seen * world / train_time if train_time > 0 else 0.0
    model.eval()
    return result


@torch.no_grad()
def _validate(model: nn.Module, loader: DataLoader, runtime: Runtime, cfg: FineTuneConfig,
              distributed: bool, normalize: Normalizer) -> tuple[float, float | None]:
    """Mean validation loss (no label smoothing) and top-1, reduced over processes."""
    model.eval()
    sums = torch.zeros(3, device=runtime.device)
    for x, y, good in loader:
        x, y, good = normalize(runtime.batch(x)), y.to(runtime.device), good.to(runtime.device)
        with runtime.autocast():
            logits = model(x)
        n_good = good.sum().float()
        loss = _loss(logits, y, good, cfg, 0.0)
        hits = (logits.argmax(1) == y).logical_and(good).sum().float() if not cfg.multilabel else n_good * 0
        sums += torch.stack([loss * n_good, hits, n_good])
    if distributed:
        dist.all_reduce(sums)
    loss_sum, hits, n = sums.tolist()
    model.train()
    return loss_sum / max(n, 1), (None if cfg.multilabel else hits / max(n, 1))


