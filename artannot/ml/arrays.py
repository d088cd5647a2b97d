"""Models stored as plain arrays: .npz files written atomically and read without pickle."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from artannot.errors import ModelError
from artannot.store.files import atomic_write_bytes


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write named arrays as one .npz; a crash leaves the previous file whole."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_npz(path: str | Path, required: Iterable[str], what: str = "model file") -> dict[str, np.ndarray]:
    """Every array of a .npz written by save_npz; ModelError if unreadable, pickled or missing a name."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ModelError(f"{what} {path} cannot be read (it is missing); retrain it") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # damaged, or pickled objects (never loaded)
        raise ModelError(f"{what} {path} cannot be read (not a model file ArtAnnot wrote, or damaged);"
                         " retrain it") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ModelError(f"{what} {path} lacks {', '.join(missing)}; retrain it")
    return arrays
