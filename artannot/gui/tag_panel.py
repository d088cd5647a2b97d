"""The Tags dock: the tags of the selected images as removable chips, a field to add more (with completion
over the project's tags), and the tag model's suggestions to accept with a click.

`TagPanel` only shows and asks (signals); `TagEdits` is the component beside it: it decides which images
the panel speaks for (the selection, or the image under review), reads their tags and suggestions through the
Project and commits each edit as one undoable event.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

from PySide6.QtCore import QModelIndex, QObject, QStringListModel, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCompleter,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from artannot.errors import ArtAnnotError
from artannot.gui.tag_chips import STYLE, FlowLayout, Suggestion, SuggestionChip, TagChip
from artannot.store import tags as tag_store

SEPARATORS = re.compile(r"[,;]")
MAX_LISTED = 5000  # selections larger than this are tagged and untagged, not listed tag by tag
MAX_SUGGESTED = 200  # suggestions are pooled over at most this many selected images
MAX_CHIPS = 60  # tags shown for a selection; shared ones come first
MAX_SUGGESTIONS = 12  # shown: every one over its threshold, then the likeliest others down to MIN_SHOWN
MIN_SHOWN = 0.05

def split_tags(text: str) -> list[str]:
    """The tag names typed in one field: comma or semicolon separates them, blanks are dropped."""
    return [part.strip() for part in SEPARATORS.split(text) if part.strip()]


def summarize(image_ids: Sequence[int], tags_by_image: dict[int, list[str]],
              suggestions_by_image: dict[int, list[tuple[str, float, bool]]]
              ) -> tuple[list[tuple[str, int]], list[Suggestion]]:
    """(tag, how many of the images carry it) commonest first, and the suggestions pooled over the images.

    A suggestion leaves out images that already carry the tag; ones over a threshold come first.
    """
    counts = Counter(t for i in image_ids for t in tags_by_image.get(i, ()))
    tags = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))
    carried = {i: {t.lower() for t in tags_by_image.get(i, ())} for i in image_ids}
    pooled: dict[str, list[float]] = {}
    for image_id, rows in suggestions_by_image.items():
        for tag, probability, over in rows:
            if tag.lower() not in carried.get(image_id, ()):
                acc = pooled.setdefault(tag, [0.0, 0, 0])
                acc[0] += probability
                acc[1] += bool(over)
                acc[2] += 1
    suggestions = [Suggestion(tag, total / k, int(over), int(k)) for tag, (total, over, k) in pooled.items()]
    suggestions.sort(key=lambda s: (s.over == 0, -s.probability, s.tag.lower()))
    return tags, suggestions


class TagCompleter(QCompleter):
    """Completes the tag being typed after the last comma or semicolon, anywhere in the name."""

    def splitPath(self, path: str) -> list[str]:
        return [SEPARATORS.split(path)[-1].strip()]

    def pathFromIndex(self, index: QModelIndex) -> str:
        widget = self.widget()
        text = widget.text() if isinstance(widget, QLineEdit) else ""
        cut = max(text.rfind(","), text.rfind(";"))
        head = text[: cut + 1] + " " if cut >= 0 else ""
        return head + str(index.data())


class TagEdit(QLineEdit):
    """The "Add tag…" field; Esc clears it, or with nothing typed hands the keyboard back."""

    escaped = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape and not event.modifiers():
            if self.text():
                self.clear()
            else:
                self.escaped.emit()
            return
        super().keyPressEvent(event)


class TagPanel(QWidget):
    """Tags of the shown images (removable), a field to add tags, and the tag model's suggestions.

    With several images, adding or removing applies to all of them; chips show the tags all carry, and in
    grey the ones only some carry.
    """

    rename_requested = Signal(str)  # a tag to rename (or merge) across the project
    delete_requested = Signal(str)  # a tag to take off every image of the project
    add_requested = Signal(list)  # tag names to give every shown image
    remove_requested = Signal(list)  # tag names to take off every shown image
    accept_requested = Signal()  # each shown image takes its suggestions over threshold
    invalid = Signal(str)  # a typed name the store would refuse, said in words
    finished = Signal()  # Esc in an empty field: back to the grid

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.n_images = 0
        self.setStyleSheet(STYLE)
        self.note = QLabel("No image selected")
        self.note.setObjectName("note")
        self.note.setWordWrap(True)
        self.chips = FlowLayout()
        self.edit = TagEdit()
        self.edit.setPlaceholderText("Add tag…  (comma separates several, Enter adds)")
        self.edit.setClearButtonEnabled(True)
        self.known = QStringListModel(self)
        self.completer = TagCompleter(self.known, self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.setMaxVisibleItems(10)
        self.edit.setCompleter(self.completer)
        self.suggest_heading = QLabel("Suggested")
        self.suggest_heading.setObjectName("heading")
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Add every suggestion over its threshold (Shift+Space)")
        self.accept_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.suggestions = FlowLayout()
        self.suggest_hint = QLabel("")
        self.suggest_hint.setObjectName("hint")
        self.suggest_hint.setWordWrap(True)

        body = QWidget()
        body.setObjectName("tagbody")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(6)
        layout.addWidget(self.note)
        layout.addLayout(self.chips)
        layout.addWidget(self.edit)
        heading = QHBoxLayout()
        heading.addWidget(self.suggest_heading, 1)
        heading.addWidget(self.accept_button)
        layout.addLayout(heading)
        layout.addLayout(self.suggestions)
        layout.addWidget(self.suggest_hint)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.edit.returnPressed.connect(self._on_return)
        self.edit.escaped.connect(self.finished)
        self.accept_button.clicked.connect(self.accept_requested)
        self.show_tags(0, [], [])

    # ---- what the window tells it -------------------------------------------------------------------
    def set_known_tags(self, names: Sequence[str]) -> None:
        """The project's tag names for completion, most used first."""
        self.known.setStringList(list(names))

    def show_tags(self, n_images: int, tags: Sequence[tuple[str, int]] | None, suggestions: Sequence[Suggestion],
                  *, tag_model: int | None = None, suggest_note: str = "") -> None:
        """The tags of n images ((name, how many carry it); None: too many images to list) and suggestions."""
        self.n_images = n_images
        self.chips.clear()
        self.suggestions.clear()
        self.edit.setEnabled(n_images > 0)
        if n_images == 0:
            self.note.setText("No image selected")
        elif tags is None:
            self.note.setText(f"{n_images:,} images selected: tags you add or remove apply to all"
                              f" (more than {MAX_LISTED:,}: their tags are not listed)")
        elif n_images == 1:
            self.note.setText("No tags yet: type one below" if not tags else
                              f"{len(tags)} tag{'s' if len(tags) != 1 else ''}")
        else:
            shared = sum(1 for _, c in tags if c == n_images)
            self.note.setText(f"{n_images:,} images selected: tags shown are shared by all"
                              + (" (grey ones by some)" if shared < len(tags) else "")
                              + ("" if tags else ". None yet"))
        tags = list(tags or ())
        if len(tags) > MAX_CHIPS:  # a big, varied selection: the commonest tags, the rest counted
            self.note.setText(f"{self.note.text()}; {len(tags) - MAX_CHIPS:,} rarer tags not shown")
        for name, count in tags[:MAX_CHIPS]:
            chip = TagChip(name, count, n_images)
            chip.remove_clicked.connect(lambda n: self.remove_requested.emit([n]))
            chip.extend_clicked.connect(lambda n: self.add_requested.emit([n]))
            chip.rename_clicked.connect(self.rename_requested)
            chip.delete_clicked.connect(self.delete_requested)
            self.chips.addWidget(chip)
        over = [s for s in suggestions if s.over]
        shown = over + [s for s in suggestions if not s.over and s.probability >= MIN_SHOWN]
        for s in shown[: max(MAX_SUGGESTIONS, len(over))]:
            chip = SuggestionChip(s, n_images)
            chip.clicked.connect(lambda _=False, t=s.tag: self.add_requested.emit([t]))
            self.suggestions.addWidget(chip)
        has_shown = bool(self.suggestions.count())
        self.suggest_heading.setText(f"Suggested by tag model {tag_model}" if tag_model is not None else
                                     "Suggested")
        self.suggest_heading.setVisible(n_images > 0)
        self.accept_button.setVisible(bool(over))
        self.accept_button.setText(f"Accept {len(over)}  ⇧Space" if n_images == 1 else "Accept all  ⇧Space")
        if n_images == 0:
            hint = ""
        elif suggest_note:
            hint = suggest_note
        elif tag_model is None:
            hint = "Train a tag model to get suggestions here"
        elif not has_shown:
            hint = "No more suggestions for this image" if n_images == 1 else "No more suggestions"
        else:
            hint = "Click one to add it; solid green: over the tag's threshold"
        self.suggest_hint.setText(hint)
        self.suggest_hint.setVisible(bool(hint))

    def focus_input(self) -> None:
        """Put the keyboard in the "Add tag…" field."""
        self.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.edit.selectAll()

    # ---- read back (tests, screenshots) ------------------------------------------------------------
    def tag_chips(self) -> list[TagChip]:
        return [w for w in self.chips.widgets() if isinstance(w, TagChip)]

    def suggestion_chips(self) -> list[SuggestionChip]:
        return [w for w in self.suggestions.widgets() if isinstance(w, SuggestionChip)]

    def shown_tags(self) -> list[str]:
        """Tags every shown image carries."""
        return [c.name for c in self.tag_chips() if not c.partial]

    def partial_tags(self) -> list[str]:
        """Tags only some of the shown images carry."""
        return [c.name for c in self.tag_chips() if c.partial]

    def shown_suggestions(self) -> list[str]:
        return [c.suggestion.tag for c in self.suggestion_chips()]

    # ---- typing ------------------------------------------------------------------------------------
    def _on_return(self) -> None:
        popup = self.completer.popup()
        if popup.isVisible():
            if popup.currentIndex().isValid():
                return  # Enter picks the highlighted completion; the next Enter adds
            popup.hide()  # nothing picked: add what was typed
        text = self.edit.text()
        if not text.strip() or self.n_images == 0:
            return
        names = split_tags(text)
        try:
            if not names:
                raise ArtAnnotError(f"{text.strip()!r} holds no tag name: type a tag, or several separated by"
                                    " commas")
            names = [tag_store.clean_tag(n) for n in names]
        except ArtAnnotError as exc:
            self.invalid.emit(str(exc))
            return
        self.edit.clear()
        self.add_requested.emit(names)


class TagEdits(QObject):
    """The window's side of the Tags dock: which images it shows, reading them, committing edits (each one
    undoable). It owns the panel, its dock and the read timer; the window builds it and calls connect()."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.panel = TagPanel()
        self.timer = QTimer(self, singleShot=True, interval=30)  # a burst of selection changes: one read
        self.timer.timeout.connect(self.refresh_tags)
        dock = QDockWidget("Tags", window)
        dock.setObjectName("tags")
        dock.setWidget(self.panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.dock = dock

    def connect(self) -> None:
        """Wire the panel and the window's grid and review queue (once the window is built)."""
        panel = self.panel
        panel.add_requested.connect(self.add_tags_to_selection)
        panel.remove_requested.connect(self.remove_tags_from_selection)
        panel.accept_requested.connect(self.accept_tag_suggestions)
        panel.rename_requested.connect(self.rename_tag_everywhere)
        panel.delete_requested.connect(self.delete_tag_everywhere)
        panel.invalid.connect(self.w.show_error)
        panel.finished.connect(self._leave_tags)
        self.w.grid.selectionModel().selectionChanged.connect(lambda *_: self.refresh_tags_soon())
        self.w.review.current_changed.connect(lambda *_: self.refresh_tags_soon())
        self.dock.visibilityChanged.connect(lambda visible: visible and self.refresh_tags_soon())

    def tag_targets(self) -> list[int]:
        """The images the Tags dock speaks for: the one under review, else the selection (or the current)."""
        if self.w.review_mode():
            image_id = self.w.review.current_id()
            return [] if image_id is None else [image_id]
        ids = self.w.grid.selected_ids()
        if not ids and (row := self.w.grid.current_row()) is not None:
            ids = [row.id]
        return ids

    def refresh_tags_soon(self) -> None:
        self.timer.start()

    def refresh_known_tags(self) -> None:
        """The completer's and the filter bar's tag names (after opening, edits, undo, import, training)."""
        names = [] if self.w.project is None else [n for n, _ in sorted(self.w.project.tags(), key=lambda t: -t[1])]
        self.panel.set_known_tags(names)
        self.w.filter_bar.set_tags([] if self.w.project is None else list(tag_store.tag_names(self.w.project.conn).items()))

    def refresh_tags(self) -> None:
        """Read the shown images' tags and the newest tag model's suggestions into the panel."""
        self.timer.stop()
        if self.w.project is None:
            self.panel.show_tags(0, [], [])
            return
        if self.dock.isHidden():
            return  # read again when shown
        ids = self.tag_targets()
        model_id = tag_store.latest_tag_model_id(self.w.project.conn)
        if len(ids) > MAX_LISTED:
            self.panel.show_tags(len(ids), None, [], tag_model=model_id,
                                     suggest_note=f"Select at most {MAX_LISTED:,} images to list their tags;"
                                     " Shift+Space still accepts suggestions")
            return
        by_image = self.w.project.image_tags(ids)
        note = ""
        scored: dict[int, list[tuple[str, float, bool]]] = {}
        if model_id is not None and len(ids) <= MAX_SUGGESTED:
            scored = self.w.project.tag_suggestions_for(ids, model_id=model_id)
        elif model_id is not None:
            note = (f"Suggestions are pooled over at most {MAX_SUGGESTED} images; Shift+Space still accepts"
                    " each image's own")
        tags, suggestions = summarize(ids, by_image, scored)
        self.panel.show_tags(len(ids), tags, suggestions, tag_model=model_id, suggest_note=note)

    def focus_tags(self) -> None:
        """#: type tags for the selection."""
        if self.w.project is None:
            return
        self.dock.show()
        self.dock.raise_()
        self.refresh_tags()
        self.panel.focus_input()

    def _leave_tags(self) -> None:
        (self.w.review if self.w.review_mode() else self.w.grid).setFocus()

    def _tag_edit(self, edit: Callable[[], int | None]) -> tuple[bool, int | None]:
        """Run one store edit: (done, its event id or None when nothing changed); errors are shown."""
        try:
            event = edit()
        except ArtAnnotError as exc:
            self.w.show_error(str(exc))
            return False, None
        self.refresh_known_tags()
        self.refresh_tags()
        self.w.update_actions()
        return True, event

    def _no_targets(self, ids: list[int]) -> bool:
        if self.w.project is None:
            return True
        if not ids:
            self.w.statusBar().showMessage("Select images first (click, Shift/Ctrl+click, drag, Ctrl+A)", 4000)
        return not ids

    def add_tags_to_selection(self, names: list[str]) -> None:
        """Give every shown image these tags (new names are created), one undoable edit."""
        ids = self.tag_targets()
        if self._no_targets(ids) or not names:
            return
        done, event = self._tag_edit(lambda: self.w.project.add_tags(ids, names))
        what, n = ", ".join(names), _images(len(ids))
        if event is not None:
            self.w.statusBar().showMessage(f"Tagged {n} with {what} (Ctrl+Z undoes)", 5000)
        elif done:
            self.w.statusBar().showMessage(f"{n[0].upper()}{n[1:]} already carr{'ies' if len(ids) == 1 else 'y'}"
                                         f" {what}", 4000)

    def remove_tags_from_selection(self, names: list[str]) -> None:
        """Take these tags off every shown image, one undoable edit."""
        ids = self.tag_targets()
        if self._no_targets(ids) or not names:
            return
        done, event = self._tag_edit(lambda: self.w.project.remove_tags(ids, names))
        what, n = ", ".join(names), _images(len(ids))
        if done:
            self.w.statusBar().showMessage(f"Removed {what} from {n} (Ctrl+Z undoes)" if event is not None else
                                         f"The image does not carry {what}" if len(ids) == 1 else
                                         f"None of the {n} carries {what}", 5000)

    def accept_tag_suggestions(self) -> None:
        """Shift+Space: each shown image takes the tag model's suggestions over their thresholds."""
        ids = self.tag_targets()
        if self._no_targets(ids):
            return
        model_id = tag_store.latest_tag_model_id(self.w.project.conn)
        if model_id is None:
            self.w.statusBar().showMessage("No tag model yet: train one to get tag suggestions", 5000)
            return
        n = _images(len(ids))
        done, event = self._tag_edit(lambda: self.w.project.accept_tag_suggestions(ids, model_id=model_id))
        if done and event is None:
            self.w.statusBar().showMessage(f"No suggestion over its threshold left to accept on {n}", 4000)
        elif done:
            self.w.statusBar().showMessage(f"Accepted {tag_store.count_for_event(self.w.project.conn, event)} suggested"
                                         f" tags on {n} (Ctrl+Z undoes)", 5000)


    def rename_tag_everywhere(self, old: str, new: str | None = None) -> None:
        """Rename a tag on every image (to another tag's name: merge into it), one undoable edit."""
        if self.w.project is None:
            return
        if new is None:
            new, ok = QInputDialog.getText(self.w, "Rename tag", f"New name for '{old}' on every image (an existing"
                                           " tag's name merges the two):", text=old)
            if not ok:
                return
        done, event = self._tag_edit(lambda: self.w.project.rename_tag(old, new))
        if done and event is not None:
            self.w.statusBar().showMessage(f"Renamed tag {old} to {new.strip()} (Ctrl+Z undoes)", 5000)

    def delete_tag_everywhere(self, name: str, confirm: Callable[[str], bool] | None = None) -> None:
        """Take a tag off every image of the project, one undoable edit, after asking."""
        if self.w.project is None:
            return
        n = dict((t.lower(), c) for t, c in self.w.project.tags()).get(name.lower(), 0)
        question = f"Remove the tag '{name}' from all {n:,} images that carry it? Ctrl+Z undoes it."
        ask = confirm or (lambda q: QMessageBox.question(self.w, "Remove tag", q) == QMessageBox.StandardButton.Yes)
        if not ask(question):
            return
        done, event = self._tag_edit(lambda: self.w.project.delete_tag(name))
        if done and event is not None:
            self.w.statusBar().showMessage(f"Removed tag {name} from {_images(n)} (Ctrl+Z undoes)", 5000)


    def tags_from_filenames(self, vocabulary: str | None = None) -> None:
        """Edit ▸ Tags ▸ Tags from file names…: noisy tags for every image from a vocabulary file."""
        if self.w.project is None:
            return
        if vocabulary is None:
            vocabulary, _ = QFileDialog.getOpenFileName(self.w, "Tag vocabulary (one 'tag: synonym, …' per line)",
                                                        "", "Text files (*.txt);;All files (*)")
            if not vocabulary:
                return
        matched: list[int] = []

        def edit() -> int | None:
            event, n = self.w.project.tags_from_filenames(vocabulary)
            matched.append(n)
            return event

        done, event = self._tag_edit(edit)
        if done:
            n = matched[0]
            self.w.statusBar().showMessage(f"{n:,} file name{'s' if n != 1 else ''} named vocabulary tags"
                                         + (" (Ctrl+Z undoes)" if event is not None else "; nothing to change"),
                                         8000)


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}" if n != 1 else "the image"
