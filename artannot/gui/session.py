"""The window's session in QSettings: the last project, its filter and selection, and the window layout.

Edits never wait for this: each one is committed when it is made. This only brings the curator back to
where they were.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_RECENT = 10
MAX_SAVED_SELECTION = 2000  # selected ids kept in the session (a select-all of 100k is not worth restoring)


class SessionMixin:
    """save_session / restore_session for the main window (self.settings None: nothing is kept)."""

    def save_session(self) -> None:
        """Remember the project, filter, selection and window layout (every edit is already saved)."""
        s = self.settings
        if s is None:
            return
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self.saveState())
        if self.project is not None:
            current = self.grid.current_row()
            s.setValue("project", str(self.project.path))
            s.setValue("filter", json.dumps(self.filter_bar.state()))
            s.setValue("selection", json.dumps(self.grid.selected_ids()[:MAX_SAVED_SELECTION]))
            s.setValue("current", current.id if current else -1)
        s.sync()

    def recent_projects(self) -> list[str]:
        """Projects opened lately, newest first, those still on disk (File ▸ Recent projects)."""
        if self.settings is None:
            return []
        try:
            paths = json.loads(self.settings.value("recent") or "[]")
        except (TypeError, ValueError):
            return []
        return [p for p in paths if isinstance(p, str) and Path(p).exists()][:MAX_RECENT]

    def remember_recent(self, path: str | Path) -> None:
        """Put a project at the top of the recent list."""
        if self.settings is None:
            return
        path = str(Path(path).resolve())
        self.settings.setValue("recent", json.dumps([path, *[p for p in self.recent_projects() if p != path]]
                                                    [:MAX_RECENT]))

    def fill_recent_menu(self) -> None:
        """Rebuild File ▸ Recent projects from the settings."""
        menu = self.recent_menu
        menu.clear()
        for path in self.recent_projects():
            menu.addAction(Path(path).name, lambda p=path: self.open_project(p)).setToolTip(path)
        if menu.isEmpty():
            menu.addAction("No recent projects").setEnabled(False)

    def restore_session(self) -> bool:
        """Reopen the last project with its filter and selection, at the last size; False if there was none."""
        s = self.settings
        if s is None:
            return False
        if s.value("geometry") is not None:
            self.restoreGeometry(s.value("geometry"))
            self.restoreState(s.value("state"))
        path = s.value("project")
        if not path or not Path(str(path)).exists() or not self.open_project(str(path)):
            return False
        try:
            state, selection = json.loads(s.value("filter") or "{}"), json.loads(s.value("selection") or "[]")
            current = int(s.value("current") or -1)
        except (TypeError, ValueError):
            return True
        self.filter_bar.set_state(state)
        if selection or current >= 0:
            self.grid.select_ids(selection, current if current >= 0 else None)
        return True
