"""Decode and resize each image once per (image sha256, recipe) into a bounded on-disk uint8 cache, and the
device half of the input pipeline (normalize, random resized crop + flip as tensor ops on the batch).

Feature extraction, fine-tuning and prediction read the same entries: an *eval* entry is the backbone's
resize + center crop (exactly what build_transform's PIL steps produce, as uint8), a *shrunk* entry keeps the
whole image with its shorter side at most `side` (fine-tuning crops it at random every epoch, on the device).
Each entry is one `.npy` file, read memory-mapped, under

    CACHE/v{DECODER_VERSION}/{recipe tag}/{sha[:2]}/{sha}.npy

so the key is (sha256, sizes and filter, decoder version): a changed image has another sha256, a changed
recipe another folder, a changed decoder another version folder (older versions are deleted on cleanup);
a stale entry is never served. Writes go to a temporary file in the same folder, then os.replace: several
processes (DataLoader workers, torchrun ranks) can fill the cache at once and a reader sees a whole entry
or none. The cache is bounded: past its budget (ARTANNOT_DECODE_CACHE_MB, default 4096 MB) the entries
used least recently (a hit refreshes the file's mtime) are deleted down to 90% of it; prune() removes the
entries of images that left the project. It is disposable: an entry that cannot be read is deleted and
decoded again, a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from artannot.data.images import load_image, sha256_file
from artannot.errors import ArtAnnotError, Cancelled
from artannot.ml.device import loader_workers

DECODER_VERSION = 1  # bump when decoding or resizing changes: entries of other versions are never served
DEFAULT_BUDGET_MB = 4096
_SHA = re.compile(r"[0-9a-f]{64}")
_STALE_TMP_S = 3600.0  # a temporary file this old belongs to a writer that died
log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def default_budget_mb() -> int:
    """The cache budget: ARTANNOT_DECODE_CACHE_MB when set to a positive integer, else 4096 MB."""
    try:
        value = int(os.environ.get("ARTANNOT_DECODE_CACHE_MB", ""))
    except ValueError:
        return DEFAULT_BUDGET_MB
    return value if value > 0 else DEFAULT_BUDGET_MB


@dataclass(frozen=True)
class Recipe:
    """What an entry holds. eval: shorter side resized to `resize`, center crop `crop` x `crop` (the
    backbone's evaluation geometry); shrunk: the whole image, shorter side at most `resize`."""

    kind: str  # "eval" | "shrunk"
    resize: int
    crop: int = 0
    interpolation: str = "bilinear"

    @property
    def tag(self) -> str:
        """Folder name: every parameter that changes the pixels."""
        if self.kind == "eval":
            return f"eval-r{self.resize}-c{self.crop}-{self.interpolation}"
        return f"shrunk-{self.resize}"

    @property
    def min_side(self) -> int:
        """The shorter side decoding must keep (a huge scan is shrunk on load to it, never held whole)."""
        return self.resize

    def decode(self, path: str) -> np.ndarray:
        """The entry of an image file, decoded safely (ImageLoadError / OSError when it cannot be)."""
        return self.apply(load_image(path, min_side=self.min_side))

    def apply(self, img: Image.Image) -> np.ndarray:
        """The entry (H x W x 3 uint8) of a decoded image."""
        img = img if img.mode == "RGB" else img.convert("RGB")
        if self.kind == "eval":
            interp = T.InterpolationMode(self.interpolation)
            img = T.CenterCrop(self.crop)(T.Resize(self.resize, interpolation=interp)(img))
        else:
            w, h = img.size
            scale = self.resize / min(w, h)
            if scale < 1.0:
                img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC,
                                 reducing_gap=3.0)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))

    def valid(self, arr: np.ndarray) -> bool:
        """Whether a stored array has this recipe's shape and type (else it is damaged or foreign)."""
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
            return False
        if self.kind == "eval":
            return arr.shape[:2] == (self.crop, self.crop)
        return min(arr.shape[:2]) <= self.resize


def eval_recipe(spec) -> Recipe:
    """The evaluation geometry of a BackboneSpec (resize, center crop, filter) as a cache recipe."""
    return Recipe("eval", int(spec.resize_size), int(spec.input_size), str(spec.interpolation))


def shrunk_recipe(side: int) -> Recipe:
    """Whole images, shorter side at most `side` (enough for random crops)."""
    return Recipe("shrunk", int(side))


class DecodeCache:
    """Decoded uint8 images on disk, keyed by (sha256, recipe, decoder version); safe across processes."""

    def __init__(self, root: str | Path, *, budget_mb: int | None = None):
        self.root = Path(root)
        self.budget = int((budget_mb if budget_mb is not None else default_budget_mb()) * 1024 * 1024)
        self.hits = 0
        self.misses = 0
        self._written = 0  # bytes this process wrote since it last measured the cache
        self._warned = False

    @property
    def version_dir(self) -> Path:
        return self.root / f"v{DECODER_VERSION}"

    def entry_path(self, sha: str, recipe: Recipe) -> Path:
        """Where the entry of (sha, recipe) lives."""
        if not _SHA.fullmatch(sha):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.version_dir / recipe.tag / sha[:2] / f"{sha}.npy"

    def get(self, sha: str, recipe: Recipe) -> np.ndarray | None:
        """The cached entry (read-only, memory-mapped), or None; a damaged entry is deleted."""
        path = self.entry_path(sha, recipe)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, EOFError):
            arr = None
        if arr is None or not recipe.valid(arr):
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used goes first
        self.hits += 1
        return arr

    def put(self, sha: str, recipe: Recipe, arr: np.ndarray) -> None:
        """Store an entry atomically (tmp file + os.replace); a cache that cannot be written is skipped."""
        path = self.entry_path(sha, recipe)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{sha[:12]}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr, dtype=np.uint8), allow_pickle=False)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("the decode cache %s could not be written (%s); images are decoded each time",
                            self.root, exc.strerror or exc)
            return
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._written += arr.nbytes
        if self._written >= max(self.budget // 20, 1 << 20):
            self.cleanup()

    def load(self, path: str, sha: str, recipe: Recipe) -> np.ndarray:
        """The entry of an image file: from the cache, else decoded safely, stored and returned.

        Raises ArtAnnotError / OSError for an unreadable file (failures are not cached: a file may come back).
        """
        if not _SHA.fullmatch(sha or ""):  # no content hash to key it by: decoded, never cached
            return recipe.decode(path)
        arr = self.get(sha, recipe)
        if arr is not None:
            return arr
        arr = recipe.decode(path)
        self.put(sha, recipe, arr)
        return arr

    # -- housekeeping -------------------------------------------------------------------------------------

    def _files(self) -> Iterator[os.DirEntry]:
        stack = [self.root]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            yield entry
            except OSError:
                continue

    def size_bytes(self) -> int:
        """Bytes the cache holds on disk now."""
        total = 0
        for entry in self._files():
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
        return total

    def _drop_other_versions(self) -> int:
        removed = 0
        with contextlib.suppress(OSError):
            for child in self.root.iterdir():
                if child.is_dir() and child.name != self.version_dir.name and re.fullmatch(r"v\d+", child.name):
                    shutil.rmtree(child, ignore_errors=True)
                    removed += 1
        return removed

    def cleanup(self, budget_bytes: int | None = None) -> int:
        """Delete entries of older decoder versions, dead writers' temporary files, and past the budget the
        least recently used entries down to 90% of it; returns how many entries were deleted."""
        budget = self.budget if budget_bytes is None else int(budget_bytes)
        self._written = 0
        self._drop_other_versions()
        now = time.time()
        entries: list[tuple[float, int, str]] = []
        removed = 0
        for entry in self._files():
            try:
                st = entry.stat()
            except OSError:
                continue
            if entry.name.endswith(".tmp"):
                if now - st.st_mtime > _STALE_TMP_S:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            entries.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        if total <= budget:
            return 0
        target = int(budget * 0.9)
        for _, size, path in sorted(entries):
            if total <= target:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
            total -= size
        return removed

    def prune(self, live_hashes: Iterable[str]) -> int:
        """Delete the entries of images no longer in the project (and of older decoder versions)."""
        live = set(live_hashes)
        self._drop_other_versions()
        removed = 0
        for entry in self._files():
            if entry.name.endswith(".npy") and entry.name[:-4] not in live:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def warm(self, items: Sequence[tuple[str, str | None]], recipe: Recipe, *, num_workers: int = 0,
             progress: Progress | None = None, cancel: threading.Event | None = None,
             stage: str = "decoding images") -> tuple[np.ndarray, list[str | None]]:
        """Decode the (path, sha256) items missing from the cache, in `num_workers` processes; a None sha256
        is computed from the file. Returns (readable mask, sha256 per item). Raises Cancelled on `cancel`."""
        ok = np.zeros(len(items), dtype=bool)
        hashes: list[str | None] = [sha for _, sha in items]
        loader = DataLoader(_Warm(self, list(items), recipe), batch_size=16,
                            **loader_workers(num_workers), collate_fn=_as_list)
        pos = 0
        for batch in loader:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while decoding images")
            for good, sha in batch:
                ok[pos], hashes[pos] = good, sha
                pos += 1
            if progress is not None:
                progress(pos, len(items), stage)
        return ok, hashes

    def clear(self) -> None:
        """Delete every entry."""
        shutil.rmtree(self.root, ignore_errors=True)


def _as_list(batch):
    return batch


class _Warm(Dataset):
    def __init__(self, cache: DecodeCache, items: list[tuple[str, str]], recipe: Recipe):
        self.cache, self.items, self.recipe = cache, items, recipe

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[bool, str | None]:
        path, sha = self.items[i]
        try:
            if sha is None:
                sha = sha256_file(path)
            if self.cache.get(sha, self.recipe) is None:
                self.cache.load(path, sha, self.recipe)
        except (ArtAnnotError, OSError):
            return False, sha
        return True, sha


def decode_cache_for(cache_dir: str | Path, budget_mb: int | None = None) -> DecodeCache:
    """The decode cache of a project's cache folder (PROJECT.artannot.d/decoded)."""
    return DecodeCache(Path(cache_dir) / "decoded", budget_mb=budget_mb)


def prune_project(conn, cache_dir: str | Path) -> int:
    """Delete the decode-cache entries of images no longer in a project (an image whose file changed has a
    new sha256: its old entry goes too), and of older decoder versions; returns how many were deleted."""
    root = Path(cache_dir) / "decoded"
    if not root.is_dir():
        return 0
    live = {row[0] for row in conn.execute("SELECT sha256 FROM images")}
    return DecodeCache(root).prune(live)


# -- the device half ----------------------------------------------------------------------------------------


class Normalizer:
    """uint8 image batches -> normalized float on the device (float batches pass through)."""

    def __init__(self, spec, device: torch.device):
        std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) / std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        return x.float().mul_(self.scale).sub_(self.shift)  # elementwise: keeps channels_last


def pad_collate(batch):
    """(H x W x 3 uint8 array, target, ok) samples -> (N x 3 x Hmax x Wmax uint8 in channels_last layout,
    sizes N x 2, targets, ok). One copy from the (memory-mapped) entries into the padded batch."""
    arrays = [a for a, _, _ in batch]
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    buf = np.zeros((len(arrays), h, w, 3), dtype=np.uint8)
    for k, a in enumerate(arrays):
        buf[k, : a.shape[0], : a.shape[1]] = a
    x = torch.from_numpy(buf).permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last, no copy
    sizes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.long)
    targets = torch.stack([t for _, t, _ in batch])
    ok = torch.tensor([bool(g) for _, _, g in batch])
    return x, sizes, targets, ok


def crop_boxes(sizes: torch.Tensor, generator: torch.Generator, scale=(0.25, 1.0),
               ratio=(3.0 / 4.0, 4.0 / 3.0)) -> list[tuple[int, int, int, int]]:
    """RandomResizedCrop's (top, left, height, width) per image, torchvision's algorithm, one generator."""
    log_ratio = torch.log(torch.tensor(ratio))
    out = []
    for height, width in sizes.tolist():
        area = height * width
        box = None
        for _ in range(10):
            target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(),
                                                       generator=generator)).item()
            w = round((target * aspect) ** 0.5)
            h = round((target / aspect) ** 0.5)
            if 0 < w <= width and 0 < h <= height:
                i = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
                j = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
                box = (i, j, h, w)
                break
        if box is None:  # fall back to a central crop within the ratio bounds
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif in_ratio > ratio[1]:
                h, w = height, round(height * ratio[1])
            else:
                w, h = width, height
            box = ((height - h) // 2, (width - w) // 2, h, w)
        out.append(box)
    return out


class DeviceAugment:
    """Fine-tuning augmentation on the device: random resized crop (antialiased bilinear) and horizontal
    flip of each padded uint8 image, then normalization; the batch never goes through PIL."""

    def __init__(self, spec, device: torch.device, *, seed: int = 0, scale=(0.25, 1.0)):
        self.size = int(spec.input_size)
        self.scale = scale
        self.normalize = Normalizer(spec, device)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        boxes = crop_boxes(sizes, self.generator, self.scale)
        flips = torch.rand(len(boxes), generator=self.generator) < 0.5
        # CPUs resize uint8 channels_last images with a fast SIMD kernel (7x the float one); GPUs take float.
        as_uint8 = x.device.type == "cpu"
        crops = []
        for k, (i, j, h, w) in enumerate(boxes):
            crop = x[k: k + 1, :, i: i + h, j: j + w]
            crop = F.interpolate(crop if as_uint8 else crop.float(), size=(self.size, self.size), mode="bilinear",
                                 align_corners=False, antialias=True)
            crops.append(crop.flip(3) if flips[k] else crop)
        out = torch.cat(crops)
        if out.dtype == torch.uint8:
            return self.normalize(out)
        return out.clamp_(0.0, 255.0).mul_(self.normalize.scale).sub_(self.normalize.shift)
