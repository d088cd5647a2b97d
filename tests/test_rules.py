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


def test_multi_word_classes_match_file_names():
    vocab = Vocabulary({"hot dog": ["frankfurter"], "dog": [], "ice cream cone": []})
    assert (vocab.match("hot_dog_03.png").class_name, vocab.match("hot_dog_03.png").token) == ("hot dog", "hot dog")
    assert vocab.match("Hot-Dogs.png").class_name == "hot dog"
    assert vocab.match("HotDog.png").class_name == "hot dog"  # camelCase splits too
    assert vocab.match("ice_cream_cone_2.jpg").class_name == "ice cream cone"
    assert vocab.match("my_dog.png").class_name == "dog"
    assert vocab.match("frankfurter.png").class_name == "hot dog"


def test_a_file_name_naming_two_classes_is_ambiguous_not_the_first():
    vocab = Vocabulary.from_names(["violin", "piano"])
    assert vocab.match("violin_and_piano.png") is None
    assert [m.class_name for m in vocab.match_all("violin_and_piano.png")] == ["violin", "piano"]
    assert vocab.match("violin_violins.png").class_name == "violin"  # one class twice is not ambiguous


def test_import_reports_ambiguous_file_names_and_skips_unlabelled_folders(tmp_path):
    from artannot.project import Project
    from tests.shapes import make_shape_collection

    root = make_shape_collection(tmp_path / "art", per_class=2, kinds=("circle", "unsorted"))
    with Project.create(tmp_path / "a.artannot") as p:
        report = p.import_folder(root, unlabelled_folders=["Unsorted"])
        assert [c.name for c in p.classes()] == ["circle"]
        assert report.labelled == 2 and report.unlabelled == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((root / "circle").iterdir()):
        (flat / f"circle_square_{f.name}").write_bytes(f.read_bytes())
    vocab = tmp_path / "v.txt"
    vocab.write_text("circle\nsquare\n", encoding="utf-8")
    with Project.create(tmp_path / "b.artannot") as p:
        report = p.import_folder(flat, labels_from="filename", vocabulary=vocab)
    assert report.labelled == 0 and len(report.ambiguous) == 2
    assert all("ambiguous" in n and "circle, square" in n for n in report.notes())
    assert "2 ambiguous file names" in report.summary()
