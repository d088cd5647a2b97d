"""The bundled demo collections and `artannot demo DIR [--boxes]`: a ready project on one of them.

artannot/resources/demo: clip art in class folders, tagged (classification, tags);
artannot/resources/demo_boxes: clip-art scenes with musical instruments boxed in a COCO file (detection).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from artannot.errors import ProjectError

DEMO_DIR = Path(__file__).resolve().parent / "resources" / "demo"
DEMO_NAME = "demo.artannot"
BOX_DEMO_DIR = Path(__file__).resolve().parent / "resources" / "demo_boxes"
BOX_DEMO_NAME = "boxes-demo.artannot"
BOX_DEMO_COCO = "boxes.coco.json"


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


def box_demo_folder() -> Path:
    """The installed box demo: images/ with boxes.coco.json (boxes and each image's split) beside it."""
    if not (BOX_DEMO_DIR / BOX_DEMO_COCO).is_file():
        raise ProjectError(f"the box demo collection is missing from this installation ({BOX_DEMO_DIR});"
                           " reinstall artannot")
    return BOX_DEMO_DIR


def box_demo_to_review(coco: dict) -> set[int]:
    """COCO image ids of the box demo left unboxed in the project: every fourth boxed train image, where a
    detector trained on the others proposes boxes to review (their true boxes stay in the COCO file)."""
    boxed = {a["image_id"] for a in coco["annotations"]}
    train = [im["id"] for im in coco["images"] if im.get("split") == "train" and im["id"] in boxed]
    return set(train[3::4])


def write_box_demo(folder: str | Path, progress: Callable[[int, int, str], None] | None = None) -> Path:
    """FOLDER/boxes-demo.artannot with the box demo imported: its instrument boxes and its train/test split,
    except on the images box_demo_to_review leaves for the detector's proposals."""
    import json
    import tempfile

    from artannot.project import Project

    src = box_demo_folder()
    path = Path(folder).expanduser().resolve() / BOX_DEMO_NAME
    if path.exists():
        raise ProjectError(f"{path} already exists: open it with `artannot gui {path}` or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    coco = json.loads((src / BOX_DEMO_COCO).read_text(encoding="utf-8"))
    todo = box_demo_to_review(coco)
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in todo]
    with tempfile.TemporaryDirectory() as tmp, Project.create(path) as project:
        labels = Path(tmp) / BOX_DEMO_COCO
        labels.write_text(json.dumps(coco), encoding="utf-8")
        project.import_folder(src, labels_from=f"coco:{labels}", split="auto", progress=progress)
    return path
