"""Multi-label tags per image, with the labels' append-only history and the same undo stack.

An image's tag state is one active row per (image, tag): present = 1 (tagged) or 0 (a tag someone removed,
kept so undo can bring it back and training knows it was looked at). Each edit is an event in `events`;
triggers created by the schema-3 migration switch an event's tag rows off (undo) and on (redo) when
store/labels.py flips its state, so one Ctrl+Z undoes labels, boxes, class edits and tags alike.

A model's tag guesses live apart, in `tag_predictions` (model, image, tag, score): they never count as
tags until a curator accepts one (which writes a human row).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artannot.errors import ArtAnnotError
from artannot.store.db import now, write
from artannot.store.labels import SOURCES, TRAINABLE_SOURCES, new_event
from artannot.store.staged import READY

MAX_TAG_LENGTH = 64


@dataclass(frozen=True)
class TagChange:
    """One image's tag set on (present) or off."""

    image_id: int
    tag_id: int
    present: bool
    source: str = "human"
    confidence: float | None = None


def clean_tag(name: str) -> str:
    """A tag name as stored: trimmed, inner whitespace single; refuses empty, over-long or separator names."""
    tag = " ".join(str(name).split())
    if not tag:
        raise ArtAnnotError("a tag needs a name")
    if len(tag) > MAX_TAG_LENGTH:
        raise ArtAnnotError(f"tag {tag[:20]!r}… is longer than {MAX_TAG_LENGTH} characters")
    if any(c in tag for c in ";|,") or not tag.isprintable():
        raise ArtAnnotError(f"tag {tag!r} contains ';', '|', ',' or a control character; those separate tags")
    return tag


def _known(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """Every tag by its lower-cased name -> (id, name as stored): tags match case-insensitively."""
    return {r["name"].lower(): (r["id"], r["name"]) for r in conn.execute("SELECT id, name FROM tags")}


def _carriers(conn: sqlite3.Connection, tag_id: int) -> list[int]:
    """The images that carry a tag now."""
    return [r[0] for r in conn.execute(
        "SELECT image_id FROM image_tags WHERE tag_id = ? AND active = 1 AND present = 1", (tag_id,))]


def ensure_tags(conn: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of these tags (case-insensitive match to an existing tag), creating the new ones."""
    wanted = list(dict.fromkeys(clean_tag(n) for n in names))
    known = _known(conn)
    out: dict[str, int] = {}
    with write(conn):
        for name in wanted:
            hit = known.get(name.lower())
            if hit is None:
                cur = conn.execute("INSERT INTO tags(name, created_at) VALUES (?, ?)", (name, now()))
                hit = known[name.lower()] = (int(cur.lastrowid), name)
            out[name] = hit[0]
    return out


def tag_names(conn: sqlite3.Connection) -> dict[int, str]:
    """Every tag id -> name, in name order."""
    return {r[0]: r[1] for r in conn.execute("SELECT id, name FROM tags ORDER BY name COLLATE NOCASE")}


def tag_counts(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Each tag with how many images carry it now (0 for tags no image has any more)."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT t.name, COUNT(it.id) FROM tags t LEFT JOIN image_tags it ON it.tag_id = t.id AND it.active = 1"
        " AND it.present = 1 GROUP BY t.id ORDER BY t.name COLLATE NOCASE")]


def current_tag_rows(conn: sqlite3.Connection, image_ids: Sequence[int]) -> dict[tuple[int, int], sqlite3.Row]:
    """The active (image, tag) rows of these images, present or removed."""
    out: dict[tuple[int, int], sqlite3.Row] = {}
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM image_tags WHERE active = 1 AND image_id IN ({marks})", chunk):
            out[(row["image_id"], row["tag_id"])] = row
    return out


def apply_tags(conn: sqlite3.Connection, changes: Iterable[TagChange], *, description: str,
               protect_human: bool = False, event_id: int | None = None) -> int | None:
    """Set tags on or off in one committed, undoable event; the event id, or None if nothing changed.

    With protect_human, a tag state a person set is left alone (imports and rules never undo a curator).
    """
    latest: dict[tuple[int, int], TagChange] = {}
    for ch in changes:
        if ch.source not in SOURCES:
            raise ValueError(f"unknown tag source {ch.source!r}")
        latest[(ch.image_id, ch.tag_id)] = ch
    if not latest:
        return None
    with write(conn):
        current = current_tag_rows(conn, [k[0] for k in latest])
        todo = []
        for key, ch in latest.items():
            cur = current.get(key)
            if cur is None:
                if not ch.present:
                    continue  # removing a tag the image never had
            else:
                if protect_human and cur["source"] == "human":
                    continue
                if bool(cur["present"]) == ch.present and (cur["source"] == ch.source or ch.source != "human"):
                    continue
            todo.append((ch, cur))
        if not todo:
            return None
        if event_id is None:
            event_id = new_event(conn, "tag", todo[0][0].source, description)
        conn.executemany("UPDATE image_tags SET active = 0 WHERE id = ?",
                         [(cur["id"],) for _, cur in todo if cur is not None])
        stamp = now()
        conn.executemany(
            "INSERT INTO image_tags(image_id, tag_id, present, source, confidence, event_id, replaces_id, active,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            [(ch.image_id, ch.tag_id, int(ch.present), ch.source, ch.confidence, event_id,
              cur["id"] if cur is not None else None, stamp) for ch, cur in todo])
    return event_id


def set_tags(conn: sqlite3.Connection, image_ids: Sequence[int], names: Sequence[str], present: bool, *,
             source: str = "human") -> int | None:
    """A curator's edit: add (present) or remove these tags on these images, one undo step."""
    if not image_ids or not names:
        return None
    with write(conn):
        ids = ensure_tags(conn, names) if present else _existing(conn, names)
        n = len(image_ids)
        what = (f"{'tag' if present else 'untag'} {n} image{'s' if n != 1 else ''}"
                f" {'with' if present else 'from'} {', '.join(ids) or ', '.join(names)}")
        return apply_tags(conn, [TagChange(i, t, present, source) for i in image_ids for t in ids.values()],
                          description=what)


def _existing(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    """Stored name -> id of those of these names that are tags (any case); unknown names left out."""
    known = _known(conn)
    return {known[n.strip().lower()][1]: known[n.strip().lower()][0] for n in names if n.strip().lower() in known}


def rename_tag(conn: sqlite3.Connection, old: str, new: str) -> int | None:
    """Rename a tag on every image, one undoable edit; to another tag's name, merge into that tag.

    A merge moves each image's tag to the other one (as the curator's edit) and leaves the old name unused.
    Returns the event id, or None when nothing changes.
    """
    known = _known(conn)
    source = known.get(str(old).strip().lower())
    if source is None:
        raise ArtAnnotError(f"no tag named {old!r} in this project")
    new = clean_tag(new)
    target = known.get(new.lower())
    tag_id, name = source
    if target is None or target[0] == tag_id:
        if name == new:
            return None
        with write(conn):
            event_id = new_event(conn, "tag", "human", f"rename tag {name} to {new}")
            conn.execute("INSERT INTO tag_edits(event_id, tag_id, old_name, new_name) VALUES (?, ?, ?, ?)",
                         (event_id, tag_id, name, new))
            conn.execute("UPDATE tags SET name = ? WHERE id = ?", (new, tag_id))
        return event_id
    changes = [c for i in _carriers(conn, tag_id) for c in (TagChange(i, tag_id, False), TagChange(i, target[0], True))]
    return apply_tags(conn, changes, description=f"merge tag {name} into {target[1]}")


def delete_tag(conn: sqlite3.Connection, name: str) -> int | None:
    """Take a tag off every image, one undoable edit (the name stays known, unused); None if none carried it."""
    found = _existing(conn, [name])
    if not found:
        raise ArtAnnotError(f"no tag named {name!r} in this project")
    (shown, tag_id), = found.items()
    carriers = _carriers(conn, tag_id)
    return apply_tags(conn, [TagChange(i, tag_id, False) for i in carriers],
                      description=f"remove tag {shown} from {len(carriers)} image{'s' if len(carriers) != 1 else ''}")


def tags_for(conn: sqlite3.Connection, image_ids: Sequence[int]) -> dict[int, list[str]]:
    """The tags each of these images carries now, by name (images without tags are left out)."""
    names = tag_names(conn)
    out: dict[int, list[str]] = {}
    for (image_id, tag_id), row in current_tag_rows(conn, image_ids).items():
        if row["present"]:
            out.setdefault(image_id, []).append(names[tag_id])
    for tags in out.values():
        tags.sort(key=str.lower)
    return out


def tag_sources_for(conn: sqlite3.Connection, image_id: int) -> dict[str, str]:
    """Tag name -> who set it (human, rule, import), for the tags an image carries."""
    names = tag_names(conn)
    return {names[t]: row["source"] for (_, t), row in current_tag_rows(conn, [image_id]).items() if row["present"]}


def tag_history(conn: sqlite3.Connection, image_id: int) -> list[sqlite3.Row]:
    """Every tag edit of an image, oldest first, with who made it and whether it is in effect."""
    return conn.execute(
        "SELECT it.*, t.name AS tag, e.description, e.state FROM image_tags it JOIN tags t ON t.id = it.tag_id"
        " JOIN events e ON e.id = it.event_id WHERE it.image_id = ? ORDER BY it.id", (image_id,)).fetchall()


def tagged_images(conn: sqlite3.Connection, split: str | None,
                  sources: Sequence[str] = TRAINABLE_SOURCES) -> dict[int, set[int]]:
    """Images someone tagged (or untagged) in a split -> the tag ids they carry; a model's guesses not counted.

    An image counts as annotated once any tag state was set on it by a trainable source: the tags it does
    not carry are then negatives (the closed-world reading Illustration2Vec trains with).
    """
    marks = ",".join("?" * len(sources))
    where = "i.split IS ?" if split is None else "i.split = ?"
    out: dict[int, set[int]] = {}
    for r in conn.execute(
            f"SELECT it.image_id, it.tag_id, it.present FROM image_tags it JOIN images i ON i.id = it.image_id"
            f" WHERE it.active = 1 AND it.source IN ({marks}) AND i.missing = 0 AND {where}", (*sources, split)):
        tags = out.setdefault(r[0], set())
        if r[2]:
            tags.add(r[1])
    return out


def count_for_event(conn: sqlite3.Connection, event_id: int) -> int:
    """How many tag states (and tag names) an event set."""
    return conn.execute("SELECT (SELECT COUNT(*) FROM image_tags WHERE event_id = ?)"
                        " + (SELECT COUNT(*) FROM tag_edits WHERE event_id = ?)", (event_id, event_id)).fetchone()[0]


TAG_PREDICTION_SQL = "INSERT INTO tag_predictions(model_id, image_id, tag_id, score) VALUES (?, ?, ?, ?)"


def write_tag_predictions(conn: sqlite3.Connection, model_id: int, rows: Iterable[tuple[int, int, float]]) -> None:
    """A tag model's (image id, tag id, score) rows (inside the caller's transaction)."""
    conn.executemany(TAG_PREDICTION_SQL, [(model_id, *r) for r in rows])


def latest_tag_model_id(conn: sqlite3.Connection) -> int | None:
    """The newest tag model, or None."""
    row = conn.execute(f"SELECT MAX(id) FROM models WHERE method = 'tags' AND {READY}").fetchone()
    return row[0] if row and row[0] is not None else None


def model_thresholds(conn: sqlite3.Connection, model_id: int) -> dict[int, float]:
    """A tag model's decision threshold per tag id (ml/tags/train.py stores them in its params; ids, so a renamed
    tag keeps its threshold)."""
    row = conn.execute("SELECT params, classes FROM models WHERE id = ?", (model_id,)).fetchone()
    if row is None:
        return {}
    params = json.loads(row[0] or "{}")
    if "tag_thresholds" in params:
        return {int(t): float(v) for t, v in params["tag_thresholds"].items()}
    by_name = params.get("thresholds", {})  # written by name only: match the names as they are now
    names = tag_names(conn)
    return {int(t): float(by_name.get(names.get(int(t)), 0.5)) for t in json.loads(row[1] or "[]")}


def tag_scores(conn: sqlite3.Connection, model_id: int,
               image_ids: Sequence[int]) -> dict[int, list[tuple[int, str, float, bool]]]:
    """Image id -> a tag model's (tag id, tag, score, over its threshold), best first; batched, thresholds read once."""
    limit = model_thresholds(conn, model_id)
    out: dict[int, list[tuple[int, str, float, bool]]] = {}
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for image_id, tag_id, name, score in conn.execute(
                "SELECT p.image_id, p.tag_id, t.name, p.score FROM tag_predictions p JOIN tags t ON t.id = p.tag_id"
                f" WHERE p.model_id = ? AND p.image_id IN ({marks}) ORDER BY p.image_id, p.score DESC, t.name",
                (model_id, *chunk)):
            out.setdefault(image_id, []).append((tag_id, name, float(score), score >= limit.get(tag_id, 0.5)))
    return out


def over_threshold(conn: sqlite3.Connection, model_id: int, image_ids: Sequence[int]) -> dict[int, list[int]]:
    """Image id -> ids of the tags a tag model scores over their thresholds on it (batched, any selection)."""
    out = {i: [t for t, _, _, over in scored if over] for i, scored in tag_scores(conn, model_id, image_ids).items()}
    return {i: tags for i, tags in out.items() if tags}


def accept_suggestions(conn: sqlite3.Connection, model_id: int, image_ids: Sequence[int]) -> int | None:
    """A curator accepts a tag model's over-threshold tags on these images: human tags, one undoable event.

    Tags a person removed from an image stay removed (accepting a batch never overrides a single decision).
    """
    wanted = over_threshold(conn, model_id, image_ids)
    changes = [TagChange(i, t, True, "human") for i, tags in wanted.items() for t in tags]
    if not changes:
        return None
    with write(conn):
        current = current_tag_rows(conn, list(wanted))
        changes = [c for c in changes if not ((row := current.get((c.image_id, c.tag_id))) is not None
                                              and row["source"] == "human" and not row["present"])]
        n = len(wanted)
        return apply_tags(conn, changes, description=f"accept tag model {model_id}'s tags on {n} image"
                          f"{'s' if n != 1 else ''}")
