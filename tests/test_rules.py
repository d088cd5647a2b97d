"""File-name tokens matched to a vocabulary, and deterministic stratified splits."""

from __future__ import annotations

import pytest

from artannot.data.rules import Vocabulary, tokenize
from artannot.data.splits import stratified_split
from artannot.errors import ImportFormatError


def test_tokenize_drops_stop_words_digits_and_extension():
    assert tokenize("The_Violin-Player of 1889 (copy).JPG") == ["violin", "player"]
    assert tokenize("GuitarHero2.png") == ["guitar", "hero"]


def test_vocabulary_matches_plurals_and_synonyms(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("# instruments\nviolin: fiddle, viola\npiano\nharp\nbutterfly\n", encoding="utf-8")
    vocab = Vocabulary.from_file(vocab_file)
    assert vocab.classes == ["violin", "piano", "harp", "butterfly"]
    assert vocab.match("two_violins_on_a_table.jpg").class_name == "violin"
    m = vocab.match("old-fiddle.png")
    assert (m.class_name, m.token) == ("violin", "fiddle")
    assert vocab.match("Pianos.png").class_name == "piano"
    assert vocab.match("butterflies.png").class_name == "butterfly"
    assert vocab.match("portrait_of_a_lady.png") is None
    assert vocab.match("harpsichord.png") is None  # whole words only


def test_bad_vocabulary_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="names no classes"):
        Vocabulary.from_file(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text(": fiddle\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="bad.txt:1"):
        Vocabulary.from_file(bad)
    with pytest.raises(ImportFormatError, match="cannot read"):
        Vocabulary.from_file(tmp_path / "missing.txt")


def test_split_is_stratified_deterministic_and_order_free():
    labels = {i: ("a" if i < 50 else "b" if i < 80 else "c") for i in range(81)}
    keys = {i: f"hash{i}" for i in labels}
    split = stratified_split(labels, keys)
    tests = [i for i, s in split.items() if s == "test"]
    assert sum(labels[i] == "a" for i in tests) == 10
    assert sum(labels[i] == "b" for i in tests) == 6
    assert split[80] == "train"  # a class of one stays in train
    reversed_labels = dict(reversed(list(labels.items())))
    assert stratified_split(reversed_labels, keys) == split
