"""Noisy labels from file names: tokens matched to a class vocabulary (Lagunas & Garces)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from artannot.errors import ArtAnnotError, ImportFormatError

# Common English stop words plus words that clip-art and museum file names carry but never mean a class.
STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "with", "without", "over", "under", "de", "la", "le", "les", "du", "des", "der", "die", "das", "und", "el", "los", "img", "image", "images", "dsc", "photo", "pic", "picture", "clipart", "clip", "art", "png", "jpg", "jpeg", "gif", "svg", "copy", "final", "small", "large", "big", "new", "old", "version"]
)

_TOKEN = re.compile(r"[a-z]+")


def tokenize(name: str) -> list[str]:
    """Lowercase words of a file name (no extension), split on anything that is not a letter, stop words out."""
    stem = Path(name).stem
    # split camelCase before lowercasing: "ViolinPlayer" -> "Violin Player"
    stem = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)
    return [t for t in _TOKEN.findall(stem.lower()) if t not in STOP_WORDS and len(t) > 1]


def singular_forms(word: str) -> list[str]:
    """The word and its plausible singulars: violins -> violin, boxes -> box, ponies -> pony."""
    forms = [word]
    if len(word) > 3 and word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if len(word) > 3 and word.endswith("es"):
        forms.append(word[:-2])
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    return forms


@dataclass(frozen=True)
class RuleMatch:
    """Which class a file name matched, and through which token (so a curator can audit it)."""

    class_name: str
    token: str


class Vocabulary:
    """Class names and their synonyms, looked up by token."""

    def __init__(self, entries: dict[str, Iterable[str]]):
        self.source = ""  # the file it was read from, for messages
        self.classes: list[str] = []
        self._lookup: dict[str, str] = {}
        self._phrases: dict[tuple[str, ...], str] = {}  # multi-word names and synonyms: ("hot", "dog") -> class
        for name, synonyms in entries.items():
            name = name.strip()
            if not name:
                continue
            self.classes.append(name)
            for word in [name, *synonyms]:
                key = word.strip().lower()
                words = tuple(tokenize(key + ".x")) if " " in key or "_" in key or "-" in key else ()
                if len(words) > 1:
                    self._phrases.setdefault(words, name)
                    for form in singular_forms(words[-1])[1:]:
                        self._phrases.setdefault((*words[:-1], form), name)
                elif key:
                    self._lookup.setdefault(key, name)
                    for form in singular_forms(key)[1:]:
                        self._lookup.setdefault(form, name)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Vocabulary:
        """A vocabulary whose only words are the class names themselves."""
        return cls({n: [] for n in names})

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Read `class` or `class: synonym, synonym` lines; # starts a comment."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportFormatError(f"cannot read vocabulary {path}: {exc}") from None
        entries: dict[str, list[str]] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, rest = line.partition(":")
            if not name.strip():
                raise ImportFormatError(f"{path}:{lineno}: a line needs a class name before ':'")
            entries.setdefault(name.strip(), []).extend(s for s in rest.split(",") if s.strip())
        if not entries:
            raise ImportFormatError(f"vocabulary {path} names no classes")
        out = cls(entries)
        out.source = str(path)
        return out

    def lookup(self, word: str) -> str | None:
        """The class a single word names (itself, a synonym, or a plural of either), or None."""
        return next((self._lookup[f] for f in singular_forms(word.strip().lower()) if f in self._lookup), None)

    def match(self, filename: str) -> RuleMatch | None:
        """The class the file name names (directly, as a plural, a synonym or a multi-word name), or None when
        it names none or two different classes (ambiguous: see match_all)."""
        found = self.match_all(filename)
        return found[0] if len(found) == 1 else None

    def match_all(self, filename: str) -> list[RuleMatch]:
        """Every vocabulary entry the file name's tokens name, once each, in token order (multi-label tags).
        Multi-word entries match consecutive words (`hot dog` in `hot_dog_03.png`), longest first, and the
        words they use name nothing else."""
        tokens = tokenize(filename)
        longest = max((len(k) for k in self._phrases), default=1)
        out: dict[str, RuleMatch] = {}
        i = 0
        while i < len(tokens):
            for n in range(min(longest, len(tokens) - i), 1, -1):
                head, last = tuple(tokens[i:i + n - 1]), tokens[i + n - 1]
                name = next((self._phrases[(*head, f)] for f in singular_forms(last) if (*head, f) in self._phrases),
                            None)
                if name is not None:
                    out.setdefault(name, RuleMatch(name, " ".join(tokens[i:i + n])))
                    i += n
                    break
            else:
                for form in singular_forms(tokens[i]):
                    if form in self._lookup:
                        out.setdefault(self._lookup[form], RuleMatch(self._lookup[form], tokens[i]))
                        break
                i += 1
        return list(out.values())


def tags_from_filenames(conn: sqlite3.Connection, vocabulary: Vocabulary) -> tuple[int | None, int]:
    """Noisy tags from file names: each image gets every vocabulary tag its file name's tokens name.

    One undoable event with source 'rule'; a tag state a curator set is never changed. Returns (event id or
    None when nothing changed, how many images matched).
    """
    import os

    from artannot.store import tags as tag_store

    for name in vocabulary.classes:  # refuse a bad entry whether or not a file name names it
        try:
            tag_store.clean_tag(name)
        except ArtAnnotError as exc:
            raise ImportFormatError(f"{vocabulary.source or 'the vocabulary'}: {exc}") from None
    matches = {}
    for image_id, path in conn.execute("SELECT id, path FROM images WHERE missing = 0"):
        found = vocabulary.match_all(os.path.basename(os.fsdecode(path)))
        if found:
            matches[image_id] = [m.class_name for m in found]
    if not matches:
        return None, 0
    ids = tag_store.ensure_tags(conn, sorted({t for tags in matches.values() for t in tags}))
    lower = {name.lower(): tag_id for name, tag_id in ids.items()}
    changes = [tag_store.TagChange(i, lower[t.lower()], True, "rule") for i, tags in matches.items() for t in tags]
    n = len(matches)
    event = tag_store.apply_tags(conn, changes, protect_human=True,
                                 description=f"tags from the file names of {n} image{'s' if n != 1 else ''}")
    return event, n

