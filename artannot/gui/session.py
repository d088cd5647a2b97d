"""The window's session in QSettings: the last project, its filter and selection, and the window layout.

Edits never wait for this: each one is committed when it is made. This only brings the curator back to
where they were.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QObject

MAX_RECENT = 10
MAX_SAVED_SELECTION = 2000  # selected ids kept in the session (a select-all of 100k is not worth restoring)


class Session(QObject):
    """The window's session (window.settings None: nothing is kept): save, restore, recent projects."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window

    @property
    def settings(self):
        return self.w.settings

    def save(self) -> None:
        """Remember the project, filter, selection and window layout (every edit is already saved)."""
        s, w = self.settings, self.w
        if s is None:
            return
        s.setValue("geometry", w.saveGeometry())
        s.setValue("state", w.saveState())
        if w.project is not None:
            current = w.grid.current_row()
            s.setValue("project", str(w.project.path))
            s.setValue("filter", json.dumps(w.filter_bar.state()))
            s.setValue("selection", json.dumps(w.grid.selected_ids()[:MAX_SAVED_SELECTION]))
            s.setValue("current", current.id if current else -1)
        s.sync()

    def recent(self) -> list[str]:
        """Projects opened lately, newest first, those still on disk (File ▸ Recent projects)."""
        if self.settings is None:
            return []
        try:
            paths = json.loads(self.settings.value("recent") or "[]")
        except (TypeError, ValueError):
            return []
        return [p for p in paths if isinstance(p, str) and Path(p).exists()][:MAX_RECENT]

    def remember(self, path: str | Path) -> None:
        """Put a project at the top of the recent list."""
        if self.settings is None:
            return
        path = str(Path(path).resolve())
        self.settings.setValue("recent", json.dumps([path, *[p for p in self.recent() if p != path]]
                                                    [:MAX_RECENT]))

    def fill_menu(self, menu) -> None:
        """Rebuild File ▸ Recent projects from the settings."""
        menu.clear()
        for path in self.recent():
            menu.addAction(Path(path).name, lambda p=path: self.w.open_project(p)).setToolTip(path)
        if menu.isEmpty():
            menu.addAction("No recent projects").setEnabled(False)

    def restore(self) -> bool:
        """Reopen the last project with its filter and selection, at the last size; False if there was none."""
        s, w = self.settings, self.w
        if s is None:
            return False
        if s.value("geometry") is not None:
            w.restoreGeometry(s.value("geometry"))
            w.restoreState(s.value("state"))
        path = s.value("project")
        if not path or not Path(str(path)).exists() or not w.open_project(str(path)):
            return False
        try:
            state, selection = json.loads(s.value("filter") or "{}"), json.loads(s.value("selection") or "[]")
            current = int(s.value("current") or -1)
        except (TypeError, ValueError):
            return True
        w.filter_bar.set_state(state)
        if selection or current >= 0:
            w.grid.select_ids(selection, current if current >= 0 else None)
        return True
