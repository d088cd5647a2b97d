"""The bundled demo collection (artannot/resources/demo) and `artannot demo DIR`: a ready project on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from artannot.errors import ProjectError

DEMO_DIR = Path(__file__).resolve().parent / "resources" / "demo"
DEMO_NAME = "demo.artannot"


def demo_folder() -> Path:
    """The installed demo images (one sub-folder per class, tags.csv beside them)."""
    if not (DEMO_DIR / "tags.csv").is_file():
        raise ProjectError(f"the demo collection is missing from this installation ({DEMO_DIR}); reinstall artannot")
    return DEMO_DIR


def write_demo(folder: str | Path, progress: Callable[[int, int, str], None] | None = None) -> Path:
    """FOLDER/demo.artannot with the demo imported (labels from folders, split auto) and its tags.csv."""
    from artannot.project import Project

    src = demo_folder()
    path = Path(folder).expanduser().resolve() / DEMO_NAME
    if path.exists():
        raise ProjectError(f"{path} already exists: open it with `artannot gui {path}` or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with Project.create(path) as project:
        project.import_folder(src, labels_from="folder", split="auto", progress=progress)
        project.import_folder(src, labels_from=f"csv:{src / 'tags.csv'}", progress=progress)
    return path
