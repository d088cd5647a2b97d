"""Issue 14, "Harden": each defect found by the hostile-input campaign, with the real parts that showed it.

Real SQLite files, real images (tests/shapes.py), real CLI subprocesses where the defect was a hang or a kill.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from artannot.data.images import ImageLoadError, probe_image
from artannot.data.importer import NOT_FOUND_KEPT
from artannot.errors import ArtAnnotError, DiskFullError, ImportFormatError, ModelError, StorageError
from artannot.ml.features import FeatureCache
from artannot.ml.networks import load_network
from artannot.project import Project
from artannot.store import db, repo
from artannot.store.files import write_error
from artannot.store.model_files import (
    relative_model_file,
    remove_orphan_model_files,
    resolve_model_file,
)
from tests.shapes import make_shape_collection

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "artannot"]


def _one_line(exc: BaseException, *words: str) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    for w in words:
        assert w in text, (w, text)
    return text


def _labels(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(
        "SELECT image_id, class_id, source, active FROM labels ORDER BY id")]


# ---- 1. FIFOs, sockets, links: never opened, listed as skipped -------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_import_skips_fifo_socket_and_symlink_with_reasons_instead_of_hanging(tmp_path):
    root = make_shape_collection(tmp_path / "imgs", per_class=1, kinds=("circle",))
    os.mkfifo(root / "circle" / "x.png")
    sock = socket.socket(socket.AF_UNIX)
    sock_path = root / "circle" / "s.png"
    sock.bind(str(sock_path))
    (root / "circle" / "link.png").symlink_to(root / "circle" / "circle_000.png")
    try:
        with pytest.raises(ImageLoadError) as exc:
            probe_image(root / "circle" / "x.png")  # returns at once: opened non-blocking, refused by fstat
        _one_line(exc.value, "named pipe", "not a regular file")
        path = tmp_path / "p.artannot"
        Project.create(path).close()
        done = subprocess.run([*CLI, "import", str(path), str(root)], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    finally:
        sock.close()
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout and "3 skipped as not regular files" in done.stdout, done.stdout
    for name, why in (("x.png", "a named pipe"), ("s.png", "a socket"), ("link.png", "a symbolic link")):
        assert f"skipped circle/{name}: circle/{name} is {why}" in done.stderr, done.stderr


# ---- 2. a moved, renamed or copied project uses its own model files ---------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding one project with an SVM model, and the images it was trained on."""
    tmp = tmp_path_factory.mktemp("trained")
    make_shape_collection(tmp / "images", per_class=6)
    (tmp / "orig").mkdir()
    with Project.create(tmp / "orig" / "p.artannot") as p:
        p.import_folder(tmp / "images")
        p.train(method="svm", device="cpu")
    return tmp


def _copy_project(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    shutil.copytree(src.with_name(src.name + ".d"), dest.with_name(dest.name + ".d"))
    return dest


def _predict(path: Path, images: list[Path]) -> list:
    with Project(path) as p:
        return [[c for c, _ in preds] for _, preds in p.predict_files(images)]


def test_model_paths_are_stored_relative_to_the_cache_folder(trained):
    with Project(trained / "orig" / "p.artannot") as p:
        row = repo.get_model(p.conn, p.active_model_id())
        params = json.loads(row["params"])
        assert row["checkpoint"].startswith("models/") and not Path(row["checkpoint"]).is_absolute()
        assert params["predictor"]["path"] == row["checkpoint"]
        assert resolve_model_file(p.cache_dir, row["checkpoint"]).is_file()
        assert Path(p.models()[-1]["checkpoint"]).is_file()  # readers get the resolved file


@pytest.mark.parametrize("keep_original", [False, True])
def test_moved_renamed_and_copied_project_predicts_with_its_own_files(trained, tmp_path, keep_original):
    """The project that trained is copied under a new name; then the original is deleted (moved away for
    the test) or kept with its model files spoiled: the copy predicts as before, with its own files."""
    images = sorted((trained / "images").rglob("*.png"))[:3]
    orig = trained / "orig" / "p.artannot"
    expected = _predict(orig, images)
    moved = _copy_project(orig, tmp_path / "elsewhere" / "renamed.artannot")
    models = trained / "orig" / "p.artannot.d" / "models"
    saved = {f: f.read_bytes() for f in models.iterdir()}
    try:
        if keep_original:
            for f in saved:
                f.write_bytes(b"spoiled")
        else:
            os.rename(trained / "orig", trained / "gone")
        assert _predict(moved, images) == expected
    finally:
        if not keep_original:
            os.rename(trained / "gone", trained / "orig")
        for f, data in saved.items():
            f.write_bytes(data)


def test_v3_project_with_absolute_paths_is_migrated_to_relative_ones(trained, tmp_path):
    """A schema-3 project's absolute paths: its own become relative; another project's are redirected
    to this project's file of the same name, so a copy made before the upgrade reads its own files."""
    images = sorted((trained / "images").rglob("*.png"))[:2]
    first = _copy_project(trained / "orig" / "p.artannot", tmp_path / "first" / "p.artannot")
    expected = _predict(first, images)
    conn = sqlite3.connect(first)
    cache = first.with_name("p.artannot.d")
    (model_id, params, ckpt), = conn.execute("SELECT id, params, checkpoint FROM models").fetchall()
    absolute = str(cache / "models" / Path(ckpt).name)
    new = json.loads(params)
    new["predictor"]["path"] = absolute
    conn.execute("UPDATE models SET params = ?, checkpoint = ?", (json.dumps(new), absolute))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    copy = _copy_project(first, tmp_path / "second" / "copy.artannot")  # still names first's files
    for f in (cache / "models").iterdir():
        f.write_bytes(b"spoiled")  # first's files can no longer be read: copy must use its own
    assert _predict(copy, images) == expected
    with Project(copy) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        row = repo.get_model(p.conn, model_id)
        assert row["checkpoint"] == f"models/{Path(ckpt).name}"
        assert json.loads(row["params"])["predictor"]["path"] == row["checkpoint"]


def test_relative_and_resolve_round_trip(tmp_path):
    cache = tmp_path / "p.artannot.d"
    assert relative_model_file(cache, cache / "models" / "a.npz") == "models/a.npz"
    assert relative_model_file(cache, "/elsewhere/b.npz") == "/elsewhere/b.npz"  # outside: kept as it is
    assert resolve_model_file(cache, "models/a.npz") == cache / "models" / "a.npz"
    assert resolve_model_file(cache, "/elsewhere/b.npz") == Path("/elsewhere/b.npz")


# ---- 3. a damaged feature cache is moved aside or its bad vectors recomputed ------------------------------
def test_damaged_feature_cache_is_rebuilt_and_training_succeeds(trained, tmp_path, caplog):
    path = _copy_project(trained / "orig" / "p.artannot", tmp_path / "p.artannot")
    cache_file = path.with_name("p.artannot.d") / "features.sqlite"
    data = bytearray(cache_file.read_bytes())
    for k in range(0, len(data), 1024):  # every page's header and content spoiled
        data[k + 100: k + 140] = os.urandom(40)
    cache_file.write_bytes(bytes(data))
    with Project(path) as p:
        result = p.train(method="svm", device="cpu")
        assert result.metrics["n"] > 0
    assert list(cache_file.parent.glob("features.sqlite.damaged-*"))
    assert any("feature cache" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_non_finite_cached_vectors_count_as_missing(tmp_path, caplog):
    cache = FeatureCache(tmp_path / "f.sqlite")
    try:
        cache.put_many("b", {"good": np.ones(4, np.float32)})
        bad = np.array([1.0, np.nan, np.inf, 2.0], np.float16).tobytes()
        cache._conn.execute("INSERT INTO features VALUES ('b', 'bad', 4, ?)", (bad,))  # noqa: SLF001 - damage
        cache._conn.execute("INSERT INTO features VALUES ('b', 'short', 4, ?)", (b"\x00\x01",))  # noqa: SLF001
        got = cache.get_many("b", ["good", "bad", "short"])
        assert set(got) == {"good"} and cache.rejected == 2
    finally:
        cache.close()
    assert any("2 cached feature vectors" in r.getMessage() for r in caplog.records)


# ---- 4. a bad network checkpoint is one clear line --------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return os.getpid, ()


@pytest.mark.parametrize("content", ["junk", "pickled-code", "truncated-zip"])
def test_bad_network_checkpoint_is_one_line_without_the_unsafe_hint(tmp_path, content):
    path = tmp_path / "models" / "net.pt"
    path.parent.mkdir()
    path.with_suffix(".json").write_text(json.dumps(
        {"format": 1, "backbone": "efficientnet_lite0", "n_outputs": 2, "class_ids": [1, 2], "run": "net"}))
    if content == "junk":
        path.write_bytes(b"\x80\x04not a checkpoint at all")
    elif content == "pickled-code":
        torch.save({"w": _Payload()}, path)
    else:
        torch.save({"w": torch.zeros(3)}, path)
        path.write_bytes(path.read_bytes()[:40])
    from artannot.ml import networks

    meta = json.loads(path.with_suffix(".json").read_text())
    meta["format"] = networks.CHECKPOINT_FORMAT
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError) as exc:
        load_network(path)
    text = _one_line(exc.value, "is not a checkpoint ArtAnnot wrote", "retrain or delete the model")
    assert "weights_only" not in text and "pickle" not in text.lower()


def test_predict_and_saliency_on_a_bad_network_say_one_line(small, tmp_path):
    root, path = small
    with Project(path) as p:
        ckpt = p.cache_dir / "models" / "net.pt"
        ckpt.parent.mkdir(exist_ok=True)
        from artannot.ml import networks

        ckpt.with_suffix(".json").write_text(json.dumps(
            {"format": networks.CHECKPOINT_FORMAT, "backbone": "efficientnet_lite0", "n_outputs": 2,
             "class_ids": [1, 2], "run": "net"}))
        torch.save({"w": _Payload()}, ckpt)
        with db.write(p.conn):
            mid = repo.add_model(p.conn, backbone="efficientnet_lite0", method="finetune", classes=[1, 2],
                                 params={"predictor": {"kind": "network", "path": "models/net.pt"}})
        image = sorted(root.rglob("*.png"))[0]
        with pytest.raises(ModelError) as exc:
            p.predict_files([image], model_id=mid)
        _one_line(exc.value, "not a checkpoint ArtAnnot wrote")
        with pytest.raises(ModelError) as exc:
            p.saliency(p.images()[0].id, model_id=mid)
        _one_line(exc.value, "not a checkpoint ArtAnnot wrote")


# ---- 5. no writer puts a file outside its export folder -------------------------------------------------
@pytest.mark.parametrize("fmt", ["labelme", "voc", "yolo"])
def test_export_of_a_climbing_stored_path_stays_inside_the_folder(small, tmp_path, fmt):
    root, path = small
    with Project(path) as p:
        with db.write(p.conn):
            p.conn.execute("UPDATE images SET path = '../../x.png' WHERE id = (SELECT MIN(id) FROM images)")
        before = set(tmp_path.rglob("*"))
        out = tmp_path / "deep" / "er" / "out"
        p.export(out, fmt)
    new = set(tmp_path.rglob("*")) - before
    assert new and all(f == out or out in f.parents or f in out.parents for f in new), sorted(new)


# ---- 6. formula injection -------------------------------------------------------------------------------
FORMULA = "=cmd|' /C calc'!A0"


def test_csv_exports_neutralise_formulas_and_read_them_back(small, tmp_path):
    root, path = small
    labels = tmp_path / "l.csv"
    with labels.open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label"], ["circle/circle_000.png", FORMULA],
                                  ["circle/circle_001.png", "+1 boosted"]])
    with Project(path) as p:
        p.import_folder(root, labels_from=f"csv:{labels}")
        assert FORMULA in {c.name for c in p.classes()}
        p.export(tmp_path / "out.csv", "csv")
    rows = list(csv.reader((tmp_path / "out.csv").open(newline="")))
    cells = [c for r in rows for c in r]
    assert "'" + FORMULA in cells and "'+1 boosted" in cells
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    from artannot.data.formats import read_annotations

    back = {a.label for a in read_annotations("csv", tmp_path / "out.csv", root)}
    assert FORMULA in back and "+1 boosted" in back  # the quote is dropped again on import


def test_predictions_csv_neutralises_formulas(trained, tmp_path):
    path = _copy_project(trained / "orig" / "p.artannot", tmp_path / "p.artannot")
    with Project(path) as p:
        from artannot.store.classes import rename_class

        rename_class(p.conn, p.classes()[0].id, "@SUM(A1)")
        p.export(tmp_path / "pred.csv", "predictions")
    cells = [c for r in csv.reader((tmp_path / "pred.csv").open(newline="")) for c in r]
    assert "'@SUM(A1)" in cells and "@SUM(A1)" not in cells


# ---- 7. huge JSON integers ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["coco", "labelme"])
def test_json_with_a_5000_digit_integer_is_an_import_format_error(small, tmp_path, kind):
    root, path = small
    big = "9" * 5000
    if kind == "coco":
        src = tmp_path / "c.json"
        src.write_text('{"images": [{"id": ' + big + ', "file_name": "circle/circle_000.png"}], "annotations": [],'
                       ' "categories": []}')
    else:
        src = tmp_path / "lm"
        src.mkdir()
        (src / "a.json").write_text('{"shapes": [], "imagePath": "x.png", "imageHeight": ' + big + "}")
    with Project(path) as p, pytest.raises(ImportFormatError) as exc:
        p.import_folder(root, labels_from=f"{kind}:{src}")
    _one_line(exc.value, "c.json" if kind == "coco" else "a.json", "not valid JSON")


# ---- 8. a huge junk CSV ---------------------------------------------------------------------------------
N_JUNK = 200_000


def _junk_csv(path: Path, real: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([r, "circle"] for r in real)
        w.writerows([f"nowhere/{k}.png", f"class{k}"] for k in range(N_JUNK))
    return path


def test_junk_csv_matching_no_image_fails_in_one_line_and_changes_nothing(small, tmp_path):
    root, path = small
    src = _junk_csv(tmp_path / "junk.csv", [])
    with Project(path) as p:
        before = (_labels(p.conn), [c.name for c in p.classes()])
        import tracemalloc

        tracemalloc.start()
        try:
            with pytest.raises(ImportFormatError) as exc:
                p.import_folder(root, labels_from=f"csv:{src}")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20e6, f"{peak / 1e6:.0f} MB held for {N_JUNK} junk rows: the file is not streamed"
        _one_line(exc.value, f"none of the {N_JUNK} images", "nowhere/0.png")
        assert (_labels(p.conn), [c.name for c in p.classes()]) == before


def test_junk_csv_with_one_real_row_reports_only_what_happened(small, tmp_path):
    root, path = small
    src = _junk_csv(tmp_path / "junk.csv", ["square/square_000.png"])
    with Project(path) as p:
        classes = {c.name for c in p.classes()}
        report = p.import_folder(root, labels_from=f"csv:{src}")
        assert {c.name for c in p.classes()} == classes  # none of the 200k names became a class
        assert report.new_classes == [] and "new classes" not in report.summary()
        assert report.labelled == 1 and report.not_found_total == N_JUNK
        assert len(report.not_found) == NOT_FOUND_KEPT  # the first ones named, the rest counted
        assert f"{N_JUNK} annotated images not found" in report.summary()
        notes = report.notes()
        assert len(notes) == 21 and notes[-1] == f"… and {N_JUNK - 20:,} more"


# ---- 9. an interrupted export leaves nothing under the final name ------------------------------------------
SLOW_EXPORT = """
import shutil, sys, time
from artannot.cli import main
real = shutil.copy2
count = [0]
def slow(src, dest, **kw):
    count[0] += 1
    if count[0] == 5:
        print("COPYING", flush=True)
        time.sleep(300)
    return real(src, dest, **kw)
shutil.copy2 = slow
sys.exit(main(sys.argv[1:]))
"""


def test_export_killed_mid_way_leaves_no_folder_under_the_final_name(tmp_path):
    make_shape_collection(tmp_path / "images", per_class=4)
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp_path / "images")
    out = tmp_path / "export"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, "export", str(path), str(out), "--format",
                             "imagefolder"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "COPYING", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()
    partial = [d for d in tmp_path.iterdir() if d.name.startswith(".export.partial-")]
    assert len(partial) == 1 and len(list(partial[0].rglob("*.png"))) == 4  # visibly partial, not "export"
    with Project(path) as p:
        assert p.export(out, "imagefolder") == 12  # a new export still works beside the leftover
    assert len(list(out.rglob("*.png"))) == 12


# ---- 10. an ensemble that contains itself -----------------------------------------------------------------
@pytest.mark.parametrize("shape", ["self", "pair"])
def test_ensemble_cycles_are_a_model_error(small, tmp_path, shape):
    root, path = small
    with Project(path) as p:
        with db.write(p.conn):
            a = repo.add_model(p.conn, backbone="efficientnet_lite0", method="ensemble", classes=[1, 2], params={})
            b = repo.add_model(p.conn, backbone="efficientnet_lite0", method="ensemble", classes=[1, 2], params={})
            p.conn.execute("UPDATE models SET params = ? WHERE id = ?",
                           (json.dumps({"predictor": {"kind": "ensemble", "members": [a if shape == "self" else b]}}),
                            a))
            p.conn.execute("UPDATE models SET params = ? WHERE id = ?",
                           (json.dumps({"predictor": {"kind": "ensemble", "members": [a]}}), b))
        with pytest.raises(ModelError) as exc:
            p.predict_files(sorted(root.rglob("*.png"))[:1], model_id=a)
        _one_line(exc.value, "contains itself")


# ---- class names, full disks, orphan files --------------------------------------------------------------
def test_class_names_over_100_characters_are_refused(small, tmp_path):
    root, path = small
    with Project(path) as p:
        with pytest.raises(ArtAnnotError) as exc:
            p.class_id("x" * 100_000)
        _one_line(exc.value, "100,000 characters", "at most 100")
        assert p.class_id("y" * 100)
        labels = tmp_path / "l.csv"
        labels.write_text("circle/circle_000.png," + "z" * 101 + "\n")
        before = _labels(p.conn)
        with pytest.raises(ImportFormatError) as exc:
            p.import_folder(root, labels_from=f"csv:{labels}")
        _one_line(exc.value, "l.csv line 1", "at most 100")
        assert _labels(p.conn) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux")
def test_a_full_disk_is_reported_as_full():
    try:
        with open("/dev/full", "wb") as fh:
            fh.write(b"x" * 65536)
            fh.flush()
    except OSError as exc:
        err = write_error(Path("/dev/full"), exc)
    assert isinstance(err, DiskFullError) and isinstance(err, StorageError)
    _one_line(err, "the disk holding it is full")
    full = db.storage_error(sqlite3.OperationalError("database or disk is full"), Path("/tmp/p.artannot"))
    _one_line(full, "the disk holding /tmp/p.artannot is full")
    assert write_error(Path("x"), OSError(errno.EACCES, "Permission denied")).__class__ is StorageError


def test_orphan_model_files_of_killed_runs_are_removed_on_open(trained, tmp_path, caplog):
    path = _copy_project(trained / "orig" / "p.artannot", tmp_path / "p.artannot")
    models = path.with_name("p.artannot.d") / "models"
    kept = set(os.listdir(models))
    old = time.time() - 2 * 3600
    for name in ("svm-dead.npz", "net-dead.pt", "net-dead.json", ".svm-x.npz.abc.tmp"):
        (models / name).write_bytes(b"left by a killed run")
        os.utime(models / name, (old, old))
    (models / "svm-young.npz").write_bytes(b"a run in progress elsewhere")
    (models / "notes.txt").write_bytes(b"not ours")
    os.utime(models / "notes.txt", (old, old))
    for name in kept:  # referenced files are kept however old
        os.utime(models / name, (old, old))
    caplog.set_level("INFO", logger="artannot.project")
    with Project(path) as p:
        assert set(os.listdir(models)) == kept | {"svm-young.npz", "notes.txt"}
        assert remove_orphan_model_files(p.conn, p.cache_dir) == 0
        assert p.predict_files(sorted((trained / "images").rglob("*.png"))[:1])
    assert any("removed 4 model files" in r.getMessage() for r in caplog.records)


# ---- kill during a migration --------------------------------------------------------------------------------
PAUSED_MIGRATION = """
import sys, time
import artannot.store.model_files as mf
from artannot.cli import main
real = mf.migrate_model_paths
def migrate_then_pause(conn, cache_dir):
    n = real(conn, cache_dir)
    print("PAUSED", flush=True)
    time.sleep(300)
    return n
mf.migrate_model_paths = migrate_then_pause
sys.exit(main(sys.argv[1:]))
"""


def test_migration_killed_mid_way_leaves_the_v3_project_whole(small, tmp_path, monkeypatch):
    root, _ = small
    path = tmp_path / "old.artannot"
    monkeypatch.setattr(db, "SCHEMA_VERSION", 3)
    with Project.create(path) as p:
        p.import_folder(root)
        first = p.conn.execute("SELECT MIN(id) FROM images").fetchone()[0]  # p.images() reads schema-8 columns
        p.set_label([first], p.class_id("square"))
        npz = p.cache_dir / "models" / "svm-old.npz"
        npz.parent.mkdir()
        npz.write_bytes(b"a model")
        with db.write(p.conn):
            mid = repo.add_model(p.conn, backbone="efficientnet_lite0", method="svm", classes=[1, 2],
                                 params={"predictor": {"kind": "classifier", "classifier": "svm", "path": str(npz),
                                                       "features": {"backbone": "efficientnet_lite0"}}})
            repo.update_model(p.conn, mid, checkpoint=str(npz), metrics={})
        labels = _labels(p.conn)
    monkeypatch.undo()
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_MIGRATION, "models", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == "PAUSED", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    conn = sqlite3.connect(path)  # as the kill left it: still schema 3, the old row untouched
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT checkpoint FROM models").fetchone()[0] == str(npz)
    finally:
        conn.close()
    with Project(path) as p:  # the next open upgrades it, whole
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert _labels(p.conn) == labels
        (row,) = p.conn.execute("SELECT checkpoint, params FROM models").fetchall()
        assert row[0] == "models/svm-old.npz" and json.loads(row[1])["predictor"]["path"] == "models/svm-old.npz"
