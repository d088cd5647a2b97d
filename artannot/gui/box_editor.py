"""The image with its bounding boxes: draw by dragging, select, move, resize by handles, delete, zoom and pan.

Proposals (boxes a detector suggests, not yet accepted) are shown dashed with their class and score under
negative ids (-proposal id): they can be selected (click, Tab) but not dragged; Enter accepts the selected
one, Shift+Enter every one shown, Delete rejects, a class key accepts it with that class.

Scene coordinates are image pixels (the displayed pixmap may be a smaller decode, scaled back up), so a
box's rectangle is what the store keeps. Zoomed in past that decode's resolution, the editor asks (signal
detail_wanted, after the view settles) for the visible region at the resolution now needed, and shows what
it is given (set_detail) over the smaller decode: a huge scan is viewed at full resolution one region at a
time, never decoded whole. The editor only reports what the curator did, by signal; the
window commits each edit at once (store/boxes.py, undoable) and hands the boxes back with their new ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from artannot.gui.actions import key_name

HANDLE_PX = 9  # handle size on screen, whatever the zoom
MIN_BOX_PX = 4  # a drag shorter than this (on screen) is a click, not a new box
HANDLES = ("tl", "t", "tr", "r", "br", "b", "bl", "l")
CURSORS = {"tl": Qt.CursorShape.SizeFDiagCursor, "br": Qt.CursorShape.SizeFDiagCursor,
           "tr": Qt.CursorShape.SizeBDiagCursor, "bl": Qt.CursorShape.SizeBDiagCursor,
           "t": Qt.CursorShape.SizeVerCursor, "b": Qt.CursorShape.SizeVerCursor,
           "l": Qt.CursorShape.SizeHorCursor, "r": Qt.CursorShape.SizeHorCursor,
           "move": Qt.CursorShape.SizeAllCursor}
NAVIGATION = (Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp,
              Qt.Key.Key_PageDown, Qt.Key.Key_Home, Qt.Key.Key_End)


@dataclass(frozen=True)
class BoxView:
    """A box as the editor shows it."""

    id: int
    rect: QRectF  # image pixels
    label: str | None
    color: str
    score: float | None = None  # a proposal's detection score
    proposal: bool = False  # a detector's suggestion (id is -proposal id)


def handle_points(r: QRectF) -> dict[str, QPointF]:
    """Where the eight resize handles of a rectangle sit."""
    cx, cy = r.center().x(), r.center().y()
    return {"tl": r.topLeft(), "t": QPointF(cx, r.top()), "tr": r.topRight(), "r": QPointF(r.right(), cy),
            "br": r.bottomRight(), "b": QPointF(cx, r.bottom()), "bl": r.bottomLeft(), "l": QPointF(r.left(), cy)}


class BoxItem(QGraphicsItem):
    """One box: outline in its class colour, a name tag, and handles while selected."""

    def __init__(self, box: BoxView):
        super().__init__()
        self.box_id = box.id
        self.rect = QRectF(box.rect)
        self.label = box.label
        self.color = QColor(box.color)
        self.score = box.score
        self.proposal = box.proposal
        self.selected = False
        self.setZValue(1)

    def boundingRect(self) -> QRectF:
        pad = max(self.rect.width(), self.rect.height()) * 0.05 + 40  # tag and handles, at any zoom
        return self.rect.adjusted(-pad, -pad, pad, pad)

    def set_rect(self, rect: QRectF) -> None:
        self.prepareGeometryChange()
        self.rect = QRectF(rect)
        self.update()

    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        scale = option.levelOfDetailFromTransform(p.worldTransform()) or 1.0  # screen px per image px
        pen = QPen(self.color, 3 if self.selected else 2)
        pen.setCosmetic(True)
        if self.label is None or self.proposal:
            pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        fill = QColor(self.color)
        fill.setAlpha((35 if self.selected else 0) if self.proposal else (50 if self.selected else 18))
        p.setBrush(QBrush(fill))
        p.drawRect(self.rect)
        font = QFont()
        font.setPointSizeF(9.0)
        font.setBold(True)
        p.save()
        p.translate(self.rect.topLeft())
        p.scale(1 / scale, 1 / scale)  # the tag keeps its screen size
        text = self.label or "no class — press a key"
        if self.proposal:
            text = f"{self.label or '?'} {self.score or 0:.2f}" + (" · Enter accepts" if self.selected else "")
        fm = QFontMetricsF(font)
        tag = QRectF(0, -fm.height() - 4, fm.horizontalAdvance(text) + 10, fm.height() + 4)
        if self.rect.top() * scale < tag.height():
            tag.moveTop(0)  # no room above the box: inside it
        p.setPen(Qt.PenStyle.NoPen)
        back = QColor(self.color if self.label else QColor("#546e7a"))
        if self.proposal and not self.selected:
            back.setAlpha(170)  # a suggestion: lighter than a box
        p.setBrush(back)
        p.drawRect(tag)
        p.setFont(font)
        p.setPen(QColor("white"))
        p.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)
        p.restore()
        if self.selected and not self.proposal:
            half = HANDLE_PX / 2 / scale
            hpen = QPen(self.color.darker(140), 1)
            hpen.setCosmetic(True)
            p.setPen(hpen)
            p.setBrush(QColor("white"))
            for pt in handle_points(self.rect).values():
                p.drawRect(QRectF(pt.x() - half, pt.y() - half, 2 * half, 2 * half))


class BoxEditor(QGraphicsView):
    """Shows an image at any zoom and edits its boxes with the mouse and keyboard."""

    box_drawn = Signal(QRectF)  # a new box, image pixels
    box_changed = Signal(int, QRectF)  # box id, its new rectangle (moved or resized)
    boxes_deleted = Signal(list)  # box ids (Delete)
    selection_changed = Signal(object)  # box id or None
    hotkey_pressed = Signal(str)  # class keys typed while the editor has focus
    accept_requested = Signal()  # Space
    proposals_accepted = Signal(list)  # proposal ids (Enter on the selected proposal)
    accept_all_requested = Signal()  # Shift+Enter: every proposal shown
    proposals_rejected = Signal(list)  # proposal ids (Delete on the selected proposal)
    detail_wanted = Signal(QRectF, float)  # a region (image pixels) to decode at this many pixels per image pixel

    DETAIL_DELAY_MS = 60  # the view must rest this long before a region is asked for

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setBackgroundBrush(QColor("#eceff1"))
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(200, 200)
        self._pixmap_item: QGraphicsPixmapItem | None = None
        self._size = QRectF()  # the image, in image pixels
        self._items: dict[int, BoxItem] = {}
        self._selected: int | None = None
        self._drag: tuple[str, QPointF, QRectF] | None = None  # (what: draw|move|handle, start, original rect)
        self._draft: BoxItem | None = None
        self._pan: QPointF | None = None
        self._fitted = True
        self._detail_item: QGraphicsPixmapItem | None = None
        self._detail_rect = QRectF()  # image pixels the detail covers
        self._detail_scale = 0.0  # its decoded pixels per image pixel
        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(self.DETAIL_DELAY_MS)
        self._detail_timer.timeout.connect(self.check_detail)
        self.message = ""  # shown when there is no image (loading, unreadable)
        self.editable = True
        self.pass_navigation = False  # arrows and Page keys go to the parent (review mode) instead of scrolling

    # ---- content ----------------------------------------------------------------------------------
    def set_image(self, pixmap: QPixmap | None, width: int = 0, height: int = 0, message: str = "") -> None:
        """Show a decoded image (possibly smaller than width x height, its size in image pixels) and fit it."""
        scene = self.scene()
        for item in list(self._items.values()):
            scene.removeItem(item)
        self._items.clear()
        self._selected = None
        self._drag = self._draft = None
        if self._pixmap_item is not None:
            scene.removeItem(self._pixmap_item)
            self._pixmap_item = None
        self._clear_detail()
        self.message = message
        if pixmap is None or pixmap.isNull():
            self._size = QRectF()
            scene.setSceneRect(QRectF(0, 0, 1, 1))
            self.viewport().update()
            return
        width, height = width or pixmap.width(), height or pixmap.height()
        self._size = QRectF(0, 0, width, height)
        item = QGraphicsPixmapItem(pixmap)
        item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        item.setScale(width / pixmap.width())
        item.setZValue(0)
        scene.addItem(item)
        self._pixmap_item = item
        scene.setSceneRect(self._size)
        self.fit()

    def set_detail(self, pixmap: QPixmap, rect: QRectF) -> None:
        """Show a region of the image (rect, image pixels) decoded at a higher resolution than the image."""
        self._clear_detail()
        if pixmap.isNull() or not self.has_image() or rect.isEmpty():
            return
        item = QGraphicsPixmapItem(pixmap)
        item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        item.setPos(rect.topLeft())
        item.setScale(rect.width() / pixmap.width())
        item.setZValue(0.5)  # over the whole image's smaller decode, under the boxes
        self.scene().addItem(item)
        self._detail_item, self._detail_rect = item, QRectF(rect)
        self._detail_scale = pixmap.width() / rect.width()

    def detail(self) -> tuple[QRectF, float] | None:
        """The region shown at a higher resolution and its pixels per image pixel, if any."""
        return (QRectF(self._detail_rect), self._detail_scale) if self._detail_item is not None else None

    def needed_detail(self) -> tuple[QRectF, float] | None:
        """The visible region and the resolution it needs (a power of two up to 1, pixels per image pixel),
        when the zoom is past what the whole image's decode shows; else None."""
        if self._pixmap_item is None or not self.has_image():
            return None
        zoom = self.zoom_level()
        base = self._pixmap_item.pixmap().width() / max(1.0, self._size.width())
        if base >= 1.0 or zoom <= base * 1.05:
            return None
        visible = self.mapToScene(self.viewport().rect()).boundingRect().intersected(self._size)
        if visible.isEmpty():
            return None
        return visible, min(1.0, 2.0 ** math.ceil(math.log2(max(zoom, 1e-6))))

    def check_detail(self) -> None:
        """Ask for the visible region at the needed resolution unless the detail shown already covers it."""
        need = self.needed_detail()
        if need is None:
            self._clear_detail()
            return
        visible, scale = need
        if (self._detail_item is not None and self._detail_rect.contains(visible)
                and self._detail_scale >= scale * 0.99):
            return
        pad_x, pad_y = visible.width() / 4, visible.height() / 4  # a little around it, for short pans
        wanted = visible.adjusted(-pad_x, -pad_y, pad_x, pad_y).intersected(self._size)
        left, top = math.floor(wanted.left()), math.floor(wanted.top())
        whole = QRect(left, top, math.ceil(wanted.right()) - left, math.ceil(wanted.bottom()) - top)
        self.detail_wanted.emit(QRectF(whole), scale)

    def _clear_detail(self) -> None:
        if self._detail_item is not None:
            self.scene().removeItem(self._detail_item)
        self._detail_item, self._detail_rect, self._detail_scale = None, QRectF(), 0.0

    def _view_moved(self) -> None:
        if self._pixmap_item is not None:
            self._detail_timer.start()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self._view_moved()

    def has_image(self) -> bool:
        """Whether an image is shown (boxes can be drawn)."""
        return not self._size.isEmpty()

    def image_rect(self) -> QRectF:
        """The image's extent in image pixels."""
        return QRectF(self._size)

    def set_boxes(self, boxes: Sequence[BoxView], select: int | None = None) -> None:
        """Show these boxes (replacing the previous ones); select one by id."""
        scene = self.scene()
        for item in self._items.values():
            scene.removeItem(item)
        self._items = {}
        for b in boxes:
            item = BoxItem(b)
            scene.addItem(item)
            self._items[b.id] = item
        self._selected = None
        self.select_box(select if select in self._items else None)

    def boxes(self) -> list[tuple[int, QRectF]]:
        """(id, rectangle) of the boxes shown."""
        return [(i, QRectF(item.rect)) for i, item in self._items.items()]

    def selected_box(self) -> int | None:
        """The id of the selected box, if any."""
        return self._selected

    def selected_proposal(self) -> int | None:
        """The id of the selected proposal (not its item key), if a proposal is selected."""
        return -self._selected if self._selected is not None and self._selected < 0 else None

    def proposals(self) -> list[int]:
        """The ids of the proposals shown, best first."""
        items = [(it.score or 0.0, -i) for i, it in self._items.items() if i < 0]
        return [pid for _, pid in sorted(items, reverse=True)]

    def select_box(self, box_id: int | None) -> None:
        """Select a box (None: none)."""
        if box_id == self._selected:
            return
        for i, item in self._items.items():
            item.selected = i == box_id
            item.setZValue(2 if i == box_id else 1)
            item.update()
        self._selected = box_id
        self.selection_changed.emit(box_id)

    # ---- view ---------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Show the whole image."""
        if self.has_image():
            self.fitInView(self._size, Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self._view_moved()

    def zoom(self, factor: float) -> None:
        """Zoom by a factor around the mouse (keys: around the centre), between a fit and 40x."""
        current = self.transform().m11()
        fit = min(self.viewport().width() / max(1.0, self._size.width()),
                  self.viewport().height() / max(1.0, self._size.height()))
        target = max(min(current * factor, 40.0), min(fit, 1.0) * 0.5)
        self.scale(target / current, target / current)
        self._fitted = False
        self._view_moved()

    def zoom_level(self) -> float:
        """Screen pixels per image pixel."""
        return self.transform().m11()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()
        self._view_moved()

    def drawForeground(self, p: QPainter, rect: QRectF) -> None:
        if self.has_image() or not self.message:
            return
        p.save()
        p.resetTransform()
        p.setPen(QColor("#78909c"))
        p.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
        p.restore()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(1.25 ** steps)
        event.accept()

    # ---- mouse --------------------------------------------------------------------------------------
    def _handle_at(self, pos: QPointF, item: BoxItem) -> str | None:
        tol = HANDLE_PX / max(self.zoom_level(), 1e-6)
        for name, pt in handle_points(item.rect).items():
            if abs(pos.x() - pt.x()) <= tol and abs(pos.y() - pt.y()) <= tol:
                return name
        return None

    def hit(self, pos: QPointF) -> tuple[int | None, str | None]:
        """(box id, 'move' or a handle name) under a scene point; the selected box wins ties."""
        if self._selected is not None and self._selected >= 0:
            item = self._items[self._selected]
            handle = self._handle_at(pos, item)
            if handle:
                return self._selected, handle
        tol = 3 / max(self.zoom_level(), 1e-6)
        inside = [(i, it) for i, it in self._items.items() if it.rect.adjusted(-tol, -tol, tol, tol).contains(pos)]
        if not inside:
            return None, None
        inside.sort(key=lambda t: (t[0] != self._selected, t[1].rect.width() * t[1].rect.height()))
        return inside[0][0], "move"

    def _clamp_point(self, pt: QPointF) -> QPointF:
        return QPointF(min(max(pt.x(), 0.0), self._size.width()), min(max(pt.y(), 0.0), self._size.height()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton):
            self._pan = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        if event.button() != Qt.MouseButton.LeftButton or not self.has_image():
            super().mousePressEvent(event)
            return
        self.setFocus()
        pos = self.mapToScene(event.position().toPoint())
        box_id, what = self.hit(pos)
        if box_id is not None:
            self.select_box(box_id)
            if self.editable and box_id >= 0:  # a proposal is accepted first, then fixed
                self._drag = (what, pos, QRectF(self._items[box_id].rect))
        elif self.editable and self._size.contains(pos):
            self.select_box(None)
            self._drag = ("draw", self._clamp_point(pos), QRectF())
            self._draft = BoxItem(BoxView(-1, QRectF(pos, pos), "new box", "#1565c0"))
            self._draft.selected = True
            self.scene().addItem(self._draft)
        else:
            self.select_box(None)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan is not None:
            delta = event.position() - self._pan
            self._pan = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            return
        pos = self.mapToScene(event.position().toPoint())
        if self._drag is None:
            _, what = self.hit(pos) if self.has_image() else (None, None)
            self.viewport().setCursor(CURSORS.get(what or "", Qt.CursorShape.CrossCursor if self.has_image()
                                                  else Qt.CursorShape.ArrowCursor))
            return
        what, start, original = self._drag
        if what == "draw":
            assert self._draft is not None
            self._draft.set_rect(QRectF(start, self._clamp_point(pos)).normalized())
        else:
            self._items[self._selected].set_rect(self._dragged(what, original, pos - start))

    def _dragged(self, what: str, r: QRectF, d: QPointF) -> QRectF:
        """The rectangle after moving it, or one of its edges or corners, by d (kept inside the image)."""
        w, h = self._size.width(), self._size.height()
        if what == "move":
            x = min(max(r.left() + d.x(), 0.0), w - r.width())
            y = min(max(r.top() + d.y(), 0.0), h - r.height())
            return QRectF(x, y, r.width(), r.height())
        left, top, right, bottom = r.left(), r.top(), r.right(), r.bottom()
        if "l" in what:
            left = min(max(left + d.x(), 0.0), right - 1)
        if "r" in what:
            right = max(min(right + d.x(), w), left + 1)
        if what.startswith("t"):
            top = min(max(top + d.y(), 0.0), bottom - 1)
        if what.startswith("b"):
            bottom = max(min(bottom + d.y(), h), top + 1)
        return QRectF(QPointF(left, top), QPointF(right, bottom))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton):
            self._pan = None
            self._fitted = False
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
            return
        if self._drag is None or event.button() != Qt.MouseButton.LeftButton:
            super().mouseReleaseEvent(event)
            return
        what, _, original = self._drag
        self._drag = None
        if what == "draw":
            assert self._draft is not None
            rect = self._draft.rect
            self.scene().removeItem(self._draft)
            self._draft = None
            on_screen = self.mapFromScene(rect).boundingRect()
            if on_screen.width() >= MIN_BOX_PX and on_screen.height() >= MIN_BOX_PX:
                self.box_drawn.emit(QRectF(rect))
            return
        rect = self._items[self._selected].rect
        if rect != original:
            self.box_changed.emit(self._selected, QRectF(rect))

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.hit(self.mapToScene(event.position().toPoint()))[0] is None:
            self.fit()
        event.accept()

    # ---- keys ---------------------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, mods = event.key(), event.modifiers()
        name = key_name(event)
        if name is not None:
            self.hotkey_pressed.emit(name)
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and mods & Qt.KeyboardModifier.ShiftModifier:
            self.accept_all_requested.emit()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.selected_proposal() is not None:
            self.proposals_accepted.emit([self.selected_proposal()])
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and not mods and self.selected_proposal() is not None:
            self.proposals_rejected.emit([self.selected_proposal()])
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and not mods:
            if self._selected is not None and self.editable:
                self.boxes_deleted.emit([self._selected])
            else:
                self.hotkey_pressed.emit("clear")
        elif key == Qt.Key.Key_Escape and self._selected is not None:
            self.select_box(None)
        elif key == Qt.Key.Key_Space and not mods:
            self.accept_requested.emit()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom(1.25)
        elif key == Qt.Key.Key_Minus:
            self.zoom(0.8)
        elif self.pass_navigation and key in NAVIGATION:
            event.ignore()
        elif key == Qt.Key.Key_Tab and not mods and self._items:  # cycle through the boxes
            ids = list(self._items)
            k = ids.index(self._selected) + 1 if self._selected in ids else 0
            self.select_box(ids[k % len(ids)])
        else:
            super().keyPressEvent(event)

    def focusNextPrevChild(self, forward: bool) -> bool:
        return False if self._items else super().focusNextPrevChild(forward)  # Tab cycles boxes instead
