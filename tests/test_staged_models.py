"""A model's rows go in short transactions while it is pending (store/staged.py): a curator's label write
never waits for a whole model to be saved or deleted, and no reader lists a model that is not whole — not
while it is written, not after its writer died mid-way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from artannot.errors import Cancelled
from artannot.ml.tasks import list_models
from artannot.project import Project
from artannot.store import staged
from artannot.store.model_files import project_cache_dir
from artannot.store.models import active_model_id, delete_model


def counts(conn, model_id: int) -> dict[str, int]:
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE model_id = ?", (model_id,)).fetchone()[0]  # noqa: S608
            for t in ("predictions", "suspects", "model_top1")}


class Curator:
    """A second connection that refuses to wait: a write lock held by the trainer makes its edit fail."""

    def __init__(self, path):
        self.project = Project(path)
        self.project.conn.execute("PRAGMA busy_timeout = 0")
        self.edits = 0
        self.listed: list[set[int]] = []
        self.raw: list[int] = []

    def edit_and_look(self) -> None:
        p = self.project
        image = p.images()[self.edits % 5]
        classes = p.classes()
        p.set_label([image.id], classes[self.edits % len(classes)].id)  # raises 'database is locked' if held
        self.edits += 1
        self.listed.append({m["id"] for m in list_models(p.conn)} | {active_model_id(p.conn) or -1})
        self.raw.append(p.conn.execute("SELECT MAX(id) FROM models").fetchone()[0])


@pytest.mark.slow
def test_saving_a_model_holds_the_write_lock_one_chunk_at_a_time_and_lists_it_once_whole(demo_project,
                                                                                         monkeypatch):
    monkeypatch.setattr(staged, "CHUNK_ROWS", 16)  # 40 images × 5 ranks: a dozen chunks
    curator = Curator(demo_project)

    def progress(done: int, total: int, stage: str) -> None:
        if stage == "saving predictions" and done < total:
            curator.edit_and_look()  # between two chunks: no transaction is open

    with Project(demo_project) as p:
        result = p.train(method="svm", device="cpu", progress=progress)
        assert curator.edits >= 5  # edits went in while the model was being saved
        assert all(result.model_id not in seen for seen in curator.listed)  # never listed half-written ...
        assert all(raw == result.model_id for raw in curator.raw)  # ... though its row was there
        assert result.model_id in {m["id"] for m in list_models(p.conn)}  # listed once whole
        n = counts(p.conn, result.model_id)
        assert n["predictions"] == 5 * len(p.images()) and n["model_top1"] == len(p.images())
        assert n["suspects"] > 0
        # the edits made while it saved count: the top-1 index's disagreement flags follow the labels now
        stale = p.conn.execute(
            "SELECT COUNT(*) FROM model_top1 t JOIN labels l ON l.image_id = t.image_id AND l.active = 1"
            " WHERE t.model_id = ? AND t.disagree != (t.class_id IS NOT l.class_id)", (result.model_id,)).fetchone()[0]
        assert stale == 0
    curator.project.close()


@pytest.mark.slow
def test_cancel_while_saving_leaves_no_model_and_no_rows(demo_project, monkeypatch):
    monkeypatch.setattr(staged, "CHUNK_ROWS", 16)

    def progress(done: int, total: int, stage: str) -> None:
        if stage == "saving predictions" and done >= 32:
            raise Cancelled("cancelled while saving")

    with Project(demo_project) as p:
        with pytest.raises(Cancelled):
            p.train(method="svm", device="cpu", progress=progress)
        assert p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 0
        assert p.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
        assert p.conn.execute("SELECT COUNT(*) FROM model_top1").fetchone()[0] == 0


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_a_model_whose_writer_died_is_never_listed_and_the_next_writer_clears_it(demo_project, monkeypatch):
    monkeypatch.setattr(staged, "CHUNK_ROWS", 16)
    with Project(demo_project) as p:
        first = p.train(method="svm", device="cpu").model_id
        # a writer killed half-way: its row pending with a pid that is gone, some of its rows written
        ids = [im.id for im in p.images()]
        cls = p.classes()[0].id
        orphan = staged.begin_model(p.conn, backbone="efficientnet_lite0", method="svm", classes=[cls], params="{}")
        staged.add_rows(p.conn, "INSERT INTO predictions(model_id, image_id, rank, class_id, score)"
                        " VALUES (?, ?, ?, ?, ?)", [(orphan, i, 1, cls, 0.9) for i in ids[:20]])
        p.conn.execute("UPDATE models SET pending = ?, metrics = ? WHERE id = ?",
                       (dead_pid(), '{"estimate": {"top1": 1.0}}', orphan))  # would win if it were listed
        p.conn.commit()
    with Project(demo_project) as p:  # reopened, as after the crash
        assert [m["id"] for m in list_models(p.conn)] == [first]
        assert active_model_id(p.conn) == first
        assert counts(p.conn, orphan)["predictions"] == 20  # still there, read by nothing ...
        second = p.train(method="svm", device="cpu").model_id  # ... until the next model is saved
        n = len(ids)  # the orphan's row and its 20 predictions are gone (SQLite may give its id to `second`)
        assert p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 2
        assert p.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 2 * 5 * n
        assert counts(p.conn, second)["model_top1"] == n
        assert [m["id"] for m in list_models(p.conn)] == [first, second]


@pytest.mark.slow
def test_deleting_a_model_hides_it_at_once_and_erases_its_rows_in_chunks(demo_project, monkeypatch):
    monkeypatch.setattr(staged, "CHUNK_ROWS", 16)
    with Project(demo_project) as p:
        keep = p.train(method="svm", device="cpu").model_id
        gone = p.train(method="svm", device="cpu").model_id
        p.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('active_model', ?)", (str(gone),))
        p.conn.commit()
        curator = Curator(demo_project)
        erase = staged.erase_model
        seen = []

        def erase_and_look(conn, model_id):
            curator.edit_and_look()  # hidden already, before any row goes
            seen.append(counts(conn, model_id)["predictions"])
            erase(conn, model_id)

        monkeypatch.setattr("artannot.store.models.erase_model", erase_and_look)
        delete_model(p.conn, project_cache_dir(p.conn), gone)
        assert seen == [5 * len(p.images())]
        assert gone not in curator.listed[0] and keep in curator.listed[0]
        assert counts(p.conn, gone) == {"predictions": 0, "suspects": 0, "model_top1": 0}
        assert active_model_id(p.conn) == keep  # the curator's choice went with the model
        curator.project.close()


def test_erase_takes_whole_images_per_transaction(tmp_path, monkeypatch):
    """Every chunk deletes whole images (all their ranks), so the top-1 index never keeps a stray row."""
    from tests.shapes import make_shape_collection

    monkeypatch.setattr(staged, "CHUNK_ROWS", 7)  # not a multiple of 5 ranks
    root = make_shape_collection(tmp_path / "art", per_class=6, kinds=("circle", "square"))
    with Project.create(tmp_path / "p.artannot") as p:
        p.import_folder(root)
        ids = [im.id for im in p.images()]
        cls = [c.id for c in p.classes()]
        model = staged.begin_model(p.conn, backbone="b", method="svm", classes=cls, params="{}")
        rows = [(model, i, r + 1, cls[(i + r) % 2], 1.0 / (r + 1)) for i in ids for r in range(5)]
        staged.add_rows(p.conn, "INSERT INTO predictions(model_id, image_id, rank, class_id, score)"
                        " VALUES (?, ?, ?, ?, ?)", rows)
        staged.finish_model(p.conn, model, metrics="{}", checkpoint=None)
        assert counts(p.conn, model)["model_top1"] == len(ids)
        statements = []
        p.conn.set_trace_callback(statements.append)
        staged.hide_model(p.conn, model)
        staged.erase_model(p.conn, model)
        p.conn.set_trace_callback(None)
        assert counts(p.conn, model) == {"predictions": 0, "suspects": 0, "model_top1": 0}
        commits = sum(s.strip().upper() == "COMMIT" for s in statements)
        assert commits >= len(rows) // 7  # one short transaction per chunk, not one for everything


def test_rewriting_a_models_predictions_replaces_whole_images_per_transaction(tmp_path):
    """ddp_infer's merge rewrites a stored model's predictions (repo.write_predictions): in short transactions
    a second connection can write between, each image always ranked whole, and images that got no new rows
    (unreadable now) lose their old ones."""
    from artannot.store import repo
    from tests.shapes import make_shape_collection

    make_shape_collection(tmp_path / "images", per_class=3, seed=1)
    with Project.create(tmp_path / "p.artannot") as p:
        p.import_folder(tmp_path / "images", labels_from="folder", split="auto")
        ids = [im.id for im in p.images()]
        classes = [c.id for c in p.classes()]
        model = staged.write_model(p.conn, backbone="b", method="svm", classes=classes, params="{}",
                                   parts=[(repo.PREDICTION_SQL, [(i, r + 1, classes[r], 0.9 - r / 10)
                                                                 for i in ids for r in range(3)])],
                                   metrics="{}", checkpoint=None)
        curator = Curator(p.path)
        seen: list[dict[int, list[int]]] = []

        def new_rows():
            for n, i in enumerate(ids[:-1]):  # the last image is unreadable this time
                if n % 2 == 0:  # between two chunks: the curator's edit gets the lock at once
                    curator.edit_and_look()
                    seen.append(repo.predictions_by_image(curator.project.conn, model))
                yield from ((i, r + 1, classes[-1 - r], 0.8 - r / 10) for r in range(3))

        written = repo.write_predictions(p.conn, model, new_rows(), chunk=4)  # 4 rows: each image's 3 kept whole
        assert written == 3 * (len(ids) - 1) and curator.edits == len(ids) // 2
        old, new = classes[:3], classes[::-1][:3]
        assert all(ranked in (old, new) for state in seen for ranked in state.values())  # never half and half
        assert any(new in state.values() and old in state.values() for state in seen[1:])  # it did go in steps
        final = repo.predictions_by_image(p.conn, model)
        assert set(final) == set(ids[:-1]) and all(ranked == new for ranked in final.values())
        top1 = p.conn.execute("SELECT COUNT(*) FROM model_top1 WHERE model_id = ?", (model,)).fetchone()[0]
        assert top1 == len(ids) - 1  # the grid's top-1 table follows
        curator.project.close()
