"""Where a stored model's files are: paths kept relative to the project's cache folder (`p.artannot.d`).

A model row names its files in `models.checkpoint` and in its params JSON (`predictor.path`,
`predictor.features.network`, `network.checkpoint`). They are written relative to the cache folder
(`models/svm-….npz`), so a project moved, renamed or copied together with its `.d` folder keeps using
its own files. `resolve_model_file` is the one way to turn a stored path into a file; old projects' absolute
paths still resolve as they are (the v4 migration rewrote those it could).
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path, PurePosixPath

# (section, key) and (section, sub-section, key) of the params JSON that hold model files.
PARAM_PATHS: tuple[tuple[str, ...], ...] = (
    ("predictor", "path"),
    ("predictor", "features", "network"),
    ("network", "checkpoint"),
)
MODELS_FOLDER = "models"


def cache_dir_for(project_path: str | os.PathLike) -> Path:
    """The cache folder beside a project file: `p.artannot` -> `p.artannot.d`."""
    path = Path(project_path)
    return path.with_name(path.name + ".d")


def project_cache_dir(conn: sqlite3.Connection) -> Path:
    """The cache folder of the project an open connection is on."""
    row = conn.execute("PRAGMA database_list").fetchone()
    if row is None or not row[2]:
        raise ValueError("an in-memory database has no cache folder")
    return cache_dir_for(Path(row[2]).resolve())


def relative_model_file(cache_dir: str | os.PathLike, path: str | os.PathLike | None) -> str | None:
    """How a model file is stored: '/'-separated and relative to cache_dir when it lies inside it."""
    if path is None or path == "":
        return None
    p = Path(path)
    if not p.is_absolute():
        return PurePosixPath(*p.parts).as_posix()
    base = Path(os.path.abspath(cache_dir))
    for candidate, root in ((Path(os.path.abspath(p)), base), (p.resolve(), base.resolve())):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(p)


def resolve_model_file(cache_dir: str | os.PathLike, stored: str | os.PathLike | None) -> Path | None:
    """The file a stored model path names: relative ones under cache_dir, absolute ones as they are."""
    if stored is None or stored == "":
        return None
    p = Path(stored)
    if p.is_absolute():
        return p
    return Path(cache_dir).joinpath(*PurePosixPath(str(stored).replace("\\", "/")).parts)


def map_param_paths(params: dict, fn: Callable[[str], str | None]) -> dict:
    """A deep copy of a model's params with fn applied to every model-file path in it."""
    out = copy.deepcopy(params)
    for keys in PARAM_PATHS:
        section = out
        for key in keys[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(section.get(keys[-1]), str) and section[keys[-1]]:
            section[keys[-1]] = fn(section[keys[-1]])
    return out


def param_model_files(params: dict) -> list[str]:
    """The model-file paths a model's params name, as stored."""
    found: list[str] = []

    def note(path: str) -> str:
        found.append(path)
        return path

    map_param_paths(params, note)
    return found


def relative_params(cache_dir: str | os.PathLike, params: dict) -> dict:
    """params with its model files stored relative to cache_dir (the writer side)."""
    return map_param_paths(params, lambda p: relative_model_file(cache_dir, p))


def resolved_params(cache_dir: str | os.PathLike, params: dict) -> dict:
    """params with its model files as absolute paths under this project's cache_dir (the reader side)."""
    return map_param_paths(params, lambda p: str(resolve_model_file(cache_dir, p)))


def model_predictor(cache_dir: str | os.PathLike, row: sqlite3.Row) -> tuple[dict, dict]:
    """(params, predictor) of a stored model row, every model file resolved against cache_dir.

    Models of the first version have no predictor: an SVM on ImageNet features of the backbone, whose file
    is the row's checkpoint.
    """
    params = resolved_params(cache_dir, json.loads(row["params"] or "{}"))
    pred = params.get("predictor") or {
        "kind": "classifier", "classifier": "svm", "path": str(resolve_model_file(cache_dir, row["checkpoint"])),
        "features": {"backbone": row["backbone"]}}
    return params, pred


def migrate_model_paths(conn: sqlite3.Connection, cache_dir: Path) -> int:
    """Rewrite model rows' absolute file paths relative to cache_dir; returns how many rows changed.

    A path inside cache_dir becomes relative. A path inside another folder (the project was copied or
    renamed) becomes relative only when a file of the same name is in this project's models folder, so a
    copy stops reading the original's files; other paths are left as they are.
    """
    models = cache_dir / MODELS_FOLDER

    def fix(path: str) -> str:
        p = Path(path)
        if not p.is_absolute():
            return path
        rel = relative_model_file(cache_dir, p)
        if rel is not None and not Path(rel).is_absolute():
            return rel
        if p.parent.name == MODELS_FOLDER and (models / p.name).is_file():
            return f"{MODELS_FOLDER}/{p.name}"
        return path

    changed = 0
    for model_id, params, checkpoint in conn.execute("SELECT id, params, checkpoint FROM models").fetchall():
        try:
            old = json.loads(params or "{}")
        except ValueError:
            old = None
        new_params = map_param_paths(old, fix) if isinstance(old, dict) else old
        new_ckpt = fix(checkpoint) if checkpoint else checkpoint
        if new_params != old or new_ckpt != checkpoint:
            conn.execute("UPDATE models SET params = ?, checkpoint = ? WHERE id = ?",
                         (json.dumps(new_params) if isinstance(old, dict) else params, new_ckpt, model_id))
            changed += 1
    return changed


ORPHAN_SUFFIXES = (".pt", ".json", ".npz", ".tmp")
ORPHAN_MIN_AGE_S = 3600.0  # younger files may belong to a training still running in another process


def referenced_model_files(conn: sqlite3.Connection, cache_dir: Path) -> set[Path]:
    """Every file a model row names (with a network's .json sidecar), resolved under cache_dir."""
    out: set[Path] = set()
    for params, checkpoint in conn.execute("SELECT params, checkpoint FROM models"):
        names = [checkpoint]
        try:
            data = json.loads(params or "{}")
        except ValueError:
            data = None
        if isinstance(data, dict):
            names += param_model_files(data)
        for name in filter(None, names):
            path = resolve_model_file(cache_dir, name)
            if path is not None:
                out.add(Path(os.path.abspath(path)))
                out.add(Path(os.path.abspath(path.with_suffix(".json"))))
    return out


def remove_orphan_model_files(conn: sqlite3.Connection, cache_dir: Path, *, min_age_s: float = ORPHAN_MIN_AGE_S,
                              now: float | None = None) -> int:
    """Delete files in cache_dir/models that no model row names (checkpoints, sidecars, arrays and temp files
    of killed or failed runs) and that are older than min_age_s; returns how many were removed."""
    import time

    folder = cache_dir / MODELS_FOLDER
    if not folder.is_dir():
        return 0
    keep = referenced_model_files(conn, cache_dir)
    cutoff = (time.time() if now is None else now) - min_age_s
    removed = 0
    for entry in os.scandir(folder):
        if not entry.name.endswith(ORPHAN_SUFFIXES) or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(os.path.abspath(entry.path))
        try:
            if path in keep or entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            os.unlink(path)
        except OSError:
            continue
        removed += 1
    return removed
