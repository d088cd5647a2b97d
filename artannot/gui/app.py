"""Start the desktop app: `artannot gui [PROJECT]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def display_available() -> bool:
    """False on Linux without a display server, where Qt would abort instead of opening a window."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def binding_problem(n: int = 100) -> str | None:
    """Why this Qt binding would abort a long session, or None when it is sound."""
    import PySide6
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        ping = Signal(object)

    probe = Probe()
    before = sys.getrefcount(True)
    for _ in range(n):
        probe.ping.emit(None)
    if before - sys.getrefcount(True) < n // 2:
        return None
    return (f"PySide6 {PySide6.__version__} on Python {sys.version_info.major}.{sys.version_info.minor} drops"
            " references to True and None (in Signal.emit and overridden virtuals) and aborts after a while;"
            " install another release, e.g. PySide6-Essentials==6.11.3, or use Python 3.12+")


def run_gui(project_path: str | None = None) -> int:
    """Open the main window (on a project if given) and run until it closes; returns the exit code."""
    if not display_available():
        print("artannot gui: no display found (DISPLAY/WAYLAND_DISPLAY unset); run it in a desktop session, "
              "or use the command-line tools (artannot --help)", file=sys.stderr)
        return 2
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from artannot.gui.main_window import MainWindow

    warning = binding_problem()
    if warning:
        print(f"artannot gui: warning: {warning}", file=sys.stderr)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("ArtAnnot")
    app.setOrganizationName("ArtAnnot")
    window = MainWindow(settings=QSettings())  # the last project, filter, selection and layout come back
    window.show()
    if not project_path:
        window.restore_session()
    else:
        path = Path(project_path).expanduser()
        if not path.exists():
            window.show_error(f"No project at {path}: create one with File ▸ New project… "
                              f"or `artannot init {path}`")
        else:
            window.open_project(path)
    return app.exec()
