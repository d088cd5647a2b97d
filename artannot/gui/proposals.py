"""Box proposals in the window: run a detector (Model ▸ Propose boxes), review what it proposes from the
keyboard, check the boxes already drawn.

`ProposalReview` is a component: it owns the proposal threshold and its bar under the image, the Model menu
entries, and the proposal keys of both box editors (the image dock's and review mode's). It reads and writes
through the store (every accept and reject is one undoable event, committed at once) and tells the window
what changed by signal: `boxes_changed(image id, item to select)` re-shows an image's boxes, `threshold_changed`
re-runs the grid's filter when it lists images with proposals, `message(str)` is a status line.

Keys in an editor: Tab selects the next box or proposal, Enter accepts the selected proposal (its class, source
`model`), a class key accepts it with that class (source `human`: the curator chose it), Delete rejects it
(never proposed again there), Shift+Enter accepts every proposal shown (at or above the threshold).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from artannot.errors import ArtAnnotError
from artannot.gui.box_editor import BoxEditor, BoxView
from artannot.project import Project
from artannot.store import proposals as proposal_store

if TYPE_CHECKING:
    from artannot.gui.main_window import MainWindow

DEFAULT_THRESHOLD = 0.5
KIND_WORDS = {"missing": "a confident detection where no box is drawn",
              "doubtful": "the detector finds nothing in this box",
              "class": "the detector sees another class in this box"}


def _propose(path: Path, image_ids, progress, cancel):
    with Project(path) as p:
        return p.propose_boxes(image_ids, progress=progress, cancel=cancel)


def _check_boxes(path: Path, progress, cancel):
    with Project(path) as p:
        suspects = p.box_suspects(refresh=True, progress=progress, cancel=cancel)
        kinds = {k: sum(1 for s in suspects if s["kind"] == k) for k in KIND_WORDS}
        checked = p.conn.execute("SELECT COUNT(*) FROM boxes WHERE active = 1").fetchone()[0]
        return {"model": p.detector_model_id(), "checked": checked, **kinds}


class ProposalBar(QWidget):
    """Under the image: the threshold slider (live), how many proposals it shows, the keys, and what the box
    check says about this image. Nothing here takes the keyboard: class keys keep labelling."""

    threshold_changed = Signal(float)

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, parent: QWidget | None = None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(1, 99)
        self.slider.setValue(round(threshold * 100))
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setToolTip("Show proposals scored at least this; Shift+Enter accepts every one shown")
        self.slider.setMinimumWidth(80)
        self.value = QLabel()
        self.count = QLabel()
        self.count.setStyleSheet("color: #546e7a;")
        self.keys = QLabel("Tab · Enter accept · class key · Del reject · Shift+Enter all")
        self.keys.setStyleSheet("color: #78909c;")
        self.keys.setWordWrap(True)
        self.check = QLabel()
        self.check.setStyleSheet("color: #ef6c00;")
        self.check.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.value)
        row.addWidget(self.slider, 1)
        row.addWidget(self.count)
        outer = QWidget()
        outer.setLayout(row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(1)
        layout.addWidget(outer)
        layout.addWidget(self.keys)
        layout.addWidget(self.check)
        self.slider.valueChanged.connect(self._on_slider)
        self._on_slider(self.slider.value(), emit=False)
        self.set_counts(0, 0)

    def threshold(self) -> float:
        return self.slider.value() / 100

    def set_threshold(self, value: float) -> None:
        self.slider.setValue(round(min(max(value, 0.01), 0.99) * 100))

    def _on_slider(self, value: int, emit: bool = True) -> None:
        self.value.setText(f"Proposals ≥ {value / 100:.2f}")
        if emit:
            self.threshold_changed.emit(value / 100)

    def set_counts(self, shown: int, total: int, check: str = "") -> None:
        """shown of total open proposals on the image; check: the box check's words about it. Hidden when the
        image has neither."""
        self.count.setText(f"{shown} shown" + (f" of {total}" if total != shown else ""))
        self.keys.setVisible(shown > 0)
        self.check.setText(check)
        self.check.setVisible(bool(check))
        self.setVisible(total > 0 or bool(check))


class ProposalReview(QObject):
    """The window's box proposals: threshold, review keys, the propose and check jobs."""

    boxes_changed = Signal(object, object)  # editor, item id to select (None: none)
    threshold_changed = Signal(float)
    message = Signal(str)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.threshold = DEFAULT_THRESHOLD
        self.last_result: dict | None = None  # what the last propose or check job returned
        self._scope = ""  # the last propose job's scope
        self.bar = ProposalBar(self.threshold)
        self.bar.threshold_changed.connect(self.set_threshold)
        self.editors = (window.viewer.editor, window.review.editor)
        for editor in self.editors:
            editor.proposals_accepted.connect(lambda ids, e=editor: self.accept(e, ids))
            editor.accept_all_requested.connect(lambda e=editor: self.accept_all(e))
            editor.proposals_rejected.connect(lambda ids, e=editor: self.reject(e, ids))

    # ---- what the editors show ----------------------------------------------------------------------
    @property
    def conn(self):
        return self.window.project.conn if self.window.project is not None else None

    def views(self, image_id: int, classes: dict, editor: BoxEditor | None = None) -> list[BoxView]:
        """The image's open proposals at or above the threshold, as the editor shows them (ids negated);
        for the image dock's editor the bar's counts and box check follow."""
        if self.conn is None:
            return []
        every = proposal_store.proposals_for(self.conn, image_id)
        shown = [p for p in every if p.score >= self.threshold]
        if editor is None or editor is self.window.viewer.editor:
            self.bar.set_counts(len(shown), len(every), self.check_text(image_id))
        return [BoxView(-p.id, QRectF(p.x, p.y, p.w, p.h),
                        classes[p.class_id].name if p.class_id in classes else None,
                        classes[p.class_id].color if p.class_id in classes else "#546e7a", p.score, True)
                for p in shown]

    def shown(self, image_id: int) -> list:
        """The image's open proposals at or above the threshold, best first."""
        return [] if self.conn is None else proposal_store.proposals_for(self.conn, image_id,
                                                                         min_score=self.threshold)

    def check_text(self, image_id: int) -> str:
        """What the detector's check of the drawn boxes says about one image (box suspects), or ''."""
        model_id = self.window.detector_id()
        if model_id is None:
            return ""
        found = [s for s in proposal_store.box_suspects(self.conn, model_id, image_id=image_id)
                 if s["kind"] != "missing"]
        if not found:
            return ""
        names = {c.id: c.name for c in self.window.classes()}
        parts = []
        for s in found[:3]:
            what = names.get(s["class_id"], "unclassed")
            if s["kind"] == "class":
                seen = names.get(s["det_class_id"], "?")
                parts.append(f"box '{what}': the detector sees '{seen}' here ({s['score']:.2f})")
            else:
                parts.append(f"box '{what}': {KIND_WORDS['doubtful']}")
        return "Box check — " + "; ".join(parts)

    def set_threshold(self, value: float) -> None:
        """Show proposals scored at least value, live, in both editors (and the grid's proposals filter)."""
        self.threshold = float(value)
        if abs(self.bar.threshold() - self.threshold) > 1e-9:
            self.bar.blockSignals(True)
            self.bar.set_threshold(self.threshold)
            self.bar.blockSignals(False)
        for editor in self.editors:
            self.boxes_changed.emit(editor, editor.selected_box())
        self.threshold_changed.emit(self.threshold)

    # ---- review -------------------------------------------------------------------------------------
    def accept(self, editor: BoxEditor, proposal_ids: list[int], class_id: int | None = None) -> None:
        """Proposals become boxes (their class, source model; class_id given: that class, source human)."""
        n = len(proposal_ids)
        self._commit(editor, proposal_store.accept, proposal_ids, class_id=class_id,
                     done=f"Accepted {n} proposed box{'es' if n != 1 else ''}")

    def accept_all(self, editor: BoxEditor) -> None:
        """Shift+Enter: every proposal the editor shows (at or above the threshold)."""
        ids = editor.proposals()
        if not ids:
            self.message.emit(f"No proposals at or above {self.threshold:.2f} on this image"
                              " (lower the threshold, or Model ▸ Propose boxes)")
            return
        self.accept(editor, ids)

    def reject(self, editor: BoxEditor, proposal_ids: list[int]) -> None:
        n = len(proposal_ids)
        self._commit(editor, proposal_store.reject, proposal_ids,
                     done=f"Rejected {n} proposed box{'es' if n != 1 else ''}")

    def key(self, editor: BoxEditor, class_id: int | None) -> None:
        """A class key with a proposal selected: accept it as that class (0 / clear: reject it)."""
        pid = editor.selected_proposal()
        if pid is None:
            return
        if class_id is None:
            self.reject(editor, [pid])
        else:
            self.accept(editor, [pid], class_id)

    def _commit(self, editor: BoxEditor, fn, proposal_ids: list[int], done: str, **kwargs) -> None:
        if self.conn is None or not proposal_ids:
            return
        try:
            event_id = fn(self.conn, proposal_ids, **kwargs)
        except ArtAnnotError as exc:
            self.window.show_error(str(exc))
            self.boxes_changed.emit(editor, None)
            return
        left = [p for p in editor.proposals() if p not in proposal_ids]
        select = -left[0] if left else None  # the next proposal: Enter, Enter, Enter reviews the image
        if select is None and fn is proposal_store.accept and event_id is not None:
            row = self.conn.execute("SELECT MAX(id) FROM boxes WHERE event_id = ?", (event_id,)).fetchone()
            select = row[0]  # the last box accepted: drag it to fix it
        self.boxes_changed.emit(editor, select)
        more = f"; {len(left)} more on this image" if left else ""
        self.message.emit(f"{done} (Ctrl+Z undoes){more}")

    # ---- jobs ---------------------------------------------------------------------------------------
    def propose(self, scope: str) -> object:
        """Model ▸ Propose boxes: scope 'current' (the image shown), 'selection' or 'unboxed' (every image
        without boxes), in the worker with progress and cancel."""
        w = self.window
        if w.project is None:
            return None
        if w.detector_id() is None:
            w.show_error("No detector yet: draw some boxes, then Model ▸ Train with options… ▸ Detector"
                         " (or Patches, for a handful of boxes).")
            return None
        if scope == "unboxed":
            ids = None
        elif scope == "current":
            row = w.review_row() if w.review_mode() else w.grid.current_row()
            ids = [row.id] if row is not None else []
        else:
            ids = w.grid.selected_ids()
        if ids == []:
            w.show_error("Select images first: proposals are made on the current image or the selection.")
            return None
        self._scope = scope
        return w.runner.run_job("proposing boxes", partial(_propose, w.project.path, ids), self._on_proposed)

    def check_boxes(self) -> object:
        """Model ▸ Check drawn boxes: run the detector over the boxed images and list the box suspects."""
        w = self.window
        if w.project is None:
            return None
        if w.detector_id() is None:
            w.show_error("No detector yet: train one on your boxes first (Model ▸ Train with options…).")
            return None
        return w.runner.run_job("checking boxes", partial(_check_boxes, w.project.path), self._on_checked)

    def train_detector(self) -> object:
        """Model ▸ Train detector: one click on the boxes drawn and accepted so far (`detect-auto` picks the
        detector or the patches cold start by box mAP on held-out boxes, where this version has it)."""
        from artannot.ml.tasks import methods

        w = self.window
        if w.project is None:
            return None
        method = "detect-auto" if "detect-auto" in methods() else "detector"
        return w.start_training(options={"method": method})

    def review(self) -> None:
        """Model ▸ Review proposals: the grid lists images with proposals (least certain first), in review mode."""
        w = self.window
        w.show_preset("proposals")
        if w.thumbnails.rowCount() == 0:
            self.message.emit(f"No open proposals at or above {self.threshold:.2f}: Model ▸ Propose boxes first")
            return
        w.grid.select_rows([0])  # the least certain first
        w.set_review_mode(True)

    def _on_proposed(self, result: dict) -> None:
        w = self.window
        if w.project is None:
            return
        shown = proposal_store.count_open(w.project.conn, min_score=self.threshold)
        if self._scope != "current" and shown:
            w.show_preset("proposals")
        else:
            w.reload()
        n, images = result["proposals"], result["images"]
        self.last_result = result
        self.message.emit(
            f"Detector {result['model']} proposed {n:,} box{'es' if n != 1 else ''} on {images:,}"
            f" image{'s' if images != 1 else ''}; {shown:,} open at ≥ {self.threshold:.2f} — Tab selects,"
            " Enter accepts, Delete rejects, Shift+Enter accepts all shown")

    def _on_checked(self, result: dict) -> None:
        w = self.window
        self.last_result = result
        found = result["missing"] + result["doubtful"] + result["class"]
        if found:
            w.show_preset("box_suspects")
        else:
            w.reload()
        self.message.emit(f"Detector {result['model']} checked {result['checked']:,} drawn boxes:"
                          f" {result['missing']} missing, {result['doubtful']} doubtful,"
                          f" {result['class']} of another class"
                          + (" — Show: Box suspects lists their images" if found else ""))


def install_proposals(w: MainWindow) -> ProposalReview:
    """Add the proposal bar under the image, the Model menu entries, and wire the component to the window."""
    review = ProposalReview(w)
    w.proposal_review = review
    layout = w.viewer.layout()
    layout.insertWidget(layout.indexOf(w.viewer.editor) + 1, review.bar)
    review.boxes_changed.connect(lambda editor, select: w.box_edits.refresh(editor, select))
    review.threshold_changed.connect(lambda _v: w.on_proposal_threshold())
    review.message.connect(lambda text: w.statusBar().showMessage(text, 10000))
    menu = w.model_menu
    menu.addSeparator()
    propose = menu.addMenu("Propose &boxes")
    w.propose_actions = []
    for text, scope, keys, tip in (
            ("On the &current image", "current", "Ctrl+Shift+B", "Run the detector on the image shown"),
            ("On the &selected images", "selection", "", "Run the detector on every selected image"),
            ("On every image &without boxes", "unboxed", "", "Run the detector on every image nobody boxed")):
        action = QAction(text, w)
        if keys:
            action.setShortcut(keys)
        action.setStatusTip(tip)
        action.triggered.connect(lambda _=False, s=scope: review.propose(s))
        propose.addAction(action)
        w.propose_actions.append(action)
    w.train_detector_action = QAction("Train &detector", w)
    w.train_detector_action.setShortcut("Ctrl+Shift+D")
    w.train_detector_action.setStatusTip("Train a detector on the boxes drawn and accepted so far, then propose")
    w.train_detector_action.triggered.connect(review.train_detector)
    menu.addAction(w.train_detector_action)
    w.review_proposals_action = QAction("Review box &proposals", w)
    w.review_proposals_action.setStatusTip("Images with open proposals, least certain first, one at a time")
    w.review_proposals_action.triggered.connect(review.review)
    menu.addAction(w.review_proposals_action)
    w.check_boxes_action = QAction("Check &drawn boxes", w)
    w.check_boxes_action.setStatusTip("Run the detector over the boxed images: missing boxes, doubtful boxes,"
                                      " class disagreements (Show: Box suspects)")
    w.check_boxes_action.triggered.connect(review.check_boxes)
    menu.addAction(w.check_boxes_action)
    w.job_actions += [w.train_detector_action, *w.propose_actions, w.check_boxes_action]
    w.project_actions.append(w.review_proposals_action)
    return review
