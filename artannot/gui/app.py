"""Start the desktop app: `artannot gui [PROJECT]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DESKTOP_ID = "io.github.artannot.ArtAnnot"  # packaging/artannot.desktop is installed under this id


def display_available() -> bool:
    """False on Linux without a display server, where Qt would abort instead of opening a window."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


# The libraries Qt's xcb platform plugin loads, and the Debian/Ubuntu package of each.
XCB_PACKAGES = {
    "xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0", "xcb-render-util": "libxcb-render-util0", "xkbcommon-x11": "libxkbcommon-x11-0",
    "xcb-randr": "libxcb-randr0", "xcb-shape": "libxcb-shape0", "xcb-xfixes": "libxcb-xfixes0",
    "xcb-xkb": "libxcb-xkb1", "xcb-shm": "libxcb-shm0", "xcb-sync": "libxcb-sync1",
    "xcb-render": "libxcb-render0", "xcb-xinerama": "libxcb-xinerama0", "xcb": "libxcb1",
    "xkbcommon": "libxkbcommon0", "X11-xcb": "libx11-xcb1", "EGL": "libegl1", "fontconfig": "libfontconfig1",
    "GL": "libgl1", "dbus-1": "libdbus-1-3",
}


def missing_xcb_packages(find=None) -> list[str]:
    """The apt packages whose libraries Qt's xcb plugin needs and this system lacks ([] when all are there).

    Uses ldd on PySide6's libqxcb.so when it can (exactly what the plugin links), else ctypes.util.find_library
    for each known library (find: a stand-in for find_library, for tests)."""
    import ctypes.util
    import re
    import shutil
    import subprocess

    if find is None:
        try:
            import PySide6

            plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
            if plugin.exists() and shutil.which("ldd"):
                out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=10).stdout
                missing = re.findall(r"^\s*lib(\S+?)\.so\S*\s+=>\s+not found", out, re.MULTILINE)
                return sorted({XCB_PACKAGES.get(name, f"lib{name}") for name in missing})
        except (OSError, subprocess.SubprocessError):
            pass
        find = ctypes.util.find_library
    return sorted(pkg for name, pkg in XCB_PACKAGES.items() if find(name) is None)


def platform_problem(environ=None, find=None) -> str | None:
    """One line naming the packages to install when Qt's xcb plugin could not start here, else None."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or env.get("QT_QPA_PLATFORM", "xcb") not in ("", "xcb") \
            or not env.get("DISPLAY"):
        return None
    missing = missing_xcb_packages(find)
    if not missing:
        return None
    return ("Qt's X11 (xcb) platform plugin cannot start: system libraries are missing; install them with"
            f" `sudo apt-get install {' '.join(missing)}` (Debian/Ubuntu)")


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


def offer_demo(window, folder: str | Path | None = None):
    """A non-modal prompt offering the bundled demo project; Open writes it (once) and opens it."""
    from PySide6.QtCore import QStandardPaths
    from PySide6.QtWidgets import QMessageBox

    from artannot.demo import DEMO_NAME, write_demo
    from artannot.errors import ArtAnnotError

    folder = Path(folder or QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
    box = QMessageBox(QMessageBox.Icon.Question, "Welcome to ArtAnnot",
                      "No project is open. Open the demo collection (289 labelled, tagged images) to try "
                      "ArtAnnot, or use File ▸ New project… for your own images.", parent=window)
    demo_button = box.addButton("Open the demo project", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Not now", QMessageBox.ButtonRole.RejectRole)

    def chosen(button) -> None:
        if button is not demo_button:
            return
        path = folder / DEMO_NAME
        try:
            if not path.exists():
                write_demo(folder)
        except ArtAnnotError as exc:
            window.show_error(str(exc))
            return
        window.open_project(path)

    box.buttonClicked.connect(chosen)
    box.open()
    window.demo_prompt = box
    return box


def run_gui(project_path: str | None = None) -> int:
    """Open the main window (on a project if given) and run until it closes; returns the exit code."""
    if not display_available():
        print("artannot gui: no display found (DISPLAY/WAYLAND_DISPLAY unset); run it in a desktop session, "
              "or use the command-line tools (artannot --help)", file=sys.stderr)
        return 2
    problem = platform_problem()
    if problem:
        print(f"artannot gui: {problem}", file=sys.stderr)
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
    app.setDesktopFileName(DESKTOP_ID)  # Wayland finds the window's icon through the installed .desktop file
    window = MainWindow(settings=QSettings())  # the last project, filter, selection and layout come back
    window.show()
    if not project_path:
        if not window.restore_session():
            offer_demo(window)  # first run (or the last project is gone): one click opens the demo
    else:
        path = Path(project_path).expanduser()
        if not path.exists():
            window.show_error(f"No project at {path}: create one with File ▸ New project… "
                              f"or `artannot init {path}`")
        else:
            window.open_project(path)
    if os.environ.get("ARTANNOT_QUIT_AFTER_MS"):  # smoke tests of installs and bundles: open, then quit
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(os.environ["ARTANNOT_QUIT_AFTER_MS"]), app.quit)
    return app.exec()
