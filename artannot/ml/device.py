"""Pick the device and the fast path: CUDA + AMP on a GPU, channels_last + bf16 on CPUs that have it."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import threading
from dataclasses import dataclass

import torch

from artannot.errors import ModelError

# A DataLoader whose worker sends no batch for this long raises instead of waiting forever (a batch of 16 of the
# largest scans decodes in well under a minute).
LOADER_TIMEOUT_S = 600
# Modules a fork server imports once, so that its workers start with them loaded (about 0.1 s instead of 3).
WORKER_PRELOAD = ["torch", "torchvision", "PIL.Image", "artannot.ml.features", "artannot.ml.decode_cache",
                  "artannot.ml.finetune"]


def worker_start_method() -> str:
    """How DataLoader workers start: 'fork' when this process runs one thread (the CLI, torchrun, the training
    child), else 'forkserver'.

    Forking copies the memory of every thread, locks included, but only the forking thread: a worker forked
    while another thread held a lock (the window's GUI, thumbnail and checkpoint threads) can wait on it forever,
    and the feature job and the window's close with it. Workers from a fork server are forked from a process
    that runs one thread. ARTANNOT_WORKER_START=fork|forkserver|spawn overrides."""
    method = os.environ.get("ARTANNOT_WORKER_START", "auto")
    if method in ("fork", "forkserver", "spawn"):
        return method
    return "fork" if threading.active_count() == 1 else "forkserver"


def loader_workers(num_workers: int) -> dict:
    """DataLoader keyword arguments for `num_workers` worker processes: their start method and a timeout."""
    if num_workers <= 0:
        return {"num_workers": 0}
    method = worker_start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(WORKER_PRELOAD)  # read when the server starts (once per process)
    return {"num_workers": num_workers, "multiprocessing_context": ctx, "timeout": LOADER_TIMEOUT_S}


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is slower than fp32."""
    if os.environ.get("ARTANNOT_BF16") in ("0", "1"):
        return os.environ["ARTANNOT_BF16"] == "1"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool = True

    @property
    def describe(self) -> str:
        """Short text for progress messages and model params."""
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")
        return f"{self.device.type} {amp}{' channels_last' if self.channels_last else ''}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for this device, or nothing."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device in the fast memory layout."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move an input batch to the device in the model's layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def select_runtime(device: str = "auto") -> Runtime:
    """Runtime for 'auto', 'cpu' or 'cuda' (a clear error when CUDA is asked for and absent)."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        return Runtime(dev, torch.float16)
    return Runtime(dev, torch.bfloat16 if cpu_has_fast_bf16() else None)
