"""GPU utilization while a block runs: torch.cuda.utilization() (NVML) when it works, else nvidia-smi."""

from __future__ import annotations

import shutil
import subprocess
import threading

import torch


def _sample(index: int) -> float | None:
    try:
        return float(torch.cuda.utilization(index))
    except Exception:  # no pynvml / NVML: ask nvidia-smi
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        try:
            out = subprocess.run([exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i",
                                  str(index)], capture_output=True, text=True, timeout=5).stdout
            return float(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None


class GpuMonitor:
    """`with GpuMonitor(device) as m: ...` then m.mean (percent, None off a GPU or without NVML/nvidia-smi)."""

    def __init__(self, device: torch.device, period: float = 0.2):
        self.index = (device.index or 0) if device.type == "cuda" else None
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = _sample(self.index)
            if value is None:
                return
            self.samples.append(value)

    def __enter__(self) -> GpuMonitor:
        if self.index is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None
