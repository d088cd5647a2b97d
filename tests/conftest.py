"""Shared fixtures: a small, deterministic copy of the bundled demo collection and a project built on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # tests never need a display


DEMO = Path(__file__).resolve().parents[1] / "artannot" / "resources" / "demo"
# Five visually distinct classes: a model learns them from a few images, and top-5 lists are full.
DEMO_CLASSES = ("fish", "roadsigns", "smilies", "stickmen", "dinosaurs")
PER_CLASS = 8


@pytest.fixture(scope="session")
def demo_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder/<label>/file.png copy of 5 demo classes × 8 images (the first 8 by name)."""
    root = tmp_path_factory.mktemp("demo_subset")
    for label in DEMO_CLASSES:
        files = sorted(p for p in (DEMO / label).iterdir() if p.suffix.lower() == ".png")[:PER_CLASS]
        assert len(files) == PER_CLASS, f"the bundled demo collection lacks {label} images"
        (root / label).mkdir()
        for f in files:
            shutil.copy2(f, root / label / f.name)
    return root


@pytest.fixture
def demo_project(tmp_path: Path, demo_subset: Path) -> Path:
    """A new project with demo_subset imported (labels from folder names, auto split); returns its path."""
    from artannot.project import Project

    path = tmp_path / "demo.artannot"
    with Project.create(path) as project:
        report = project.import_folder(demo_subset, labels_from="folder", split="auto")
    assert report.added == len(DEMO_CLASSES) * PER_CLASS, report.summary()
    return path


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """Four real PNGs (circle/, square/) and a project with them imported, labels from folder names."""
    from artannot.project import Project
    from tests.shapes import make_shape_collection

    root = make_shape_collection(tmp_path / "art", per_class=2, kinds=("circle", "square"))
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root)
    return root, path


def show_main_window(qtbot, project_path: Path):
    """The real main window on a project, shown and active so its shortcuts work; closes without asking."""
    from artannot.gui.main_window import MainWindow

    w = MainWindow()
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    assert w.open_project(project_path), w.last_error
    return w


@pytest.fixture
def window(qtbot, demo_project):
    """The main window on the demo project."""
    w = show_main_window(qtbot, demo_project)
    yield w
    w.close()
