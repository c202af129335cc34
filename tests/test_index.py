"""The album index: schema, migrations, cached hashes, analyses and manual corrections."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from albumfix.album import index as index_module
from albumfix.album.index import AlbumIndex, FaceRow, OutputRow


def _face(face_id: str, digest: str, idx: int = 0) -> FaceRow:
    rng = np.random.default_rng(idx)
    return FaceRow(face_id, digest, idx, (1.0, 2.0, 30.0, 40.0), 0.9,
                   rng.random((68, 2)).astype(np.float32), rng.random(128).astype(np.float32),
                   "dlib", {"score": 0.5})


def test_schema_is_created_in_wal_mode_and_versioned(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        assert ix.schema_version == index_module.SCHEMA_VERSION
        assert ix.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite"):
        pass
    db = sqlite3.connect(tmp_path / "i.sqlite")
    db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        AlbumIndex(tmp_path / "i.sqlite")


def test_migrations_apply_in_order(tmp_path, monkeypatch):
    with AlbumIndex(tmp_path / "i.sqlite"):
        pass
    monkeypatch.setattr(index_module, "MIGRATIONS",
                        index_module.MIGRATIONS + ["ALTER TABLE photos ADD COLUMN note TEXT"])
    monkeypatch.setattr(index_module, "SCHEMA_VERSION", len(index_module.MIGRATIONS))
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        assert ix.schema_version == len(index_module.MIGRATIONS)
        cols = [r[1] for r in ix.db.execute("PRAGMA table_info(photos)")]
        assert "note" in cols


def test_hash_cache_keyed_on_size_and_mtime(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        ix.remember_hash("a.jpg", 10, 123, "h1")
        assert ix.cached_hash("a.jpg", 10, 123) == "h1"
        assert ix.cached_hash("a.jpg", 10, 124) is None
        assert ix.cached_hash("a.jpg", 11, 123) is None


def test_analysis_roundtrip_and_settings_key(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        faces = [_face("h1-0", "h1", 0), _face("h1-1", "h1", 1)]
        ix.store_analysis("h1", "k1", (100, 80), "ok", "", faces)
        assert ix.analysis_done("h1", "k1") == ("ok", "")
        assert ix.analysis_done("h1", "k2") is None
        back = ix.faces(["h1"])
        assert [f.face_id for f in back] == ["h1-0", "h1-1"]
        assert np.array_equal(back[1].landmarks, faces[1].landmarks)
        assert np.array_equal(back[1].embedding, faces[1].embedding)
        ix.store_analysis("h1", "k2", (100, 80), "ok", "", faces[:1])
        assert [f.face_id for f in ix.faces()] == ["h1-0"]


def test_manual_assignments_survive_automatic_regrouping(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        ix.set_manual(["f1"], "grandma")
        ix.replace_automatic_assignments({"f1": "auto-x", "f2": "auto-x"})
        assert ix.assignments() == {"f1": ("grandma", True), "f2": ("auto-x", False)}
        ix.replace_automatic_assignments({"f2": "auto-y"})
        assert ix.assignments() == {"f1": ("grandma", True), "f2": ("auto-y", False)}


def test_outputs_rows(tmp_path):
    with AlbumIndex(tmp_path / "i.sqlite") as ix:
        ix.mark_output(OutputRow("a.jpg", "a.jpg", "key", "pending", "", {}))
        assert ix.output("a.jpg").state == "pending"
        ix.mark_output(OutputRow("a.jpg", "a.jpg", "key", "done", "restored", {"reason": ""}))
        assert ix.outputs_by_target()["a.jpg"].status == "restored"


def test_resolution_ladders_round_trip_and_old_indexes_gain_the_column(tmp_path):
    path = tmp_path / "i.sqlite"
    with AlbumIndex(path):
        pass
    db = sqlite3.connect(path)  # an index of schema 1, before ladders and looks: its face rows have 9 columns
    db.execute("ALTER TABLE faces DROP COLUMN ladder")
    db.execute("DROP TABLE looks")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    old = _face("h0-0", "h0")
    db.execute("INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (old.face_id, old.content_hash, 0, "[1, 2, 30, 40]", 0.9, old.landmarks.tobytes(),
                old.embedding.tobytes(), "dlib", '{"score": 0.5}'))
    db.commit()
    db.close()
    with AlbumIndex(path) as ix:
        assert ix.schema_version == index_module.SCHEMA_VERSION
        (back,) = ix.faces()
        assert back.ladder is None and np.array_equal(back.embedding, old.embedding)
        face = _face("h1-0", "h1")
        face.ladder = np.random.default_rng(5).random((3, 128)).astype(np.float32)
        ix.store_analysis("h1", "k", (100, 80), "ok", "", [face])
        assert np.array_equal(ix.faces(["h1"])[0].ladder, face.ladder)


def test_second_looks_are_kept_per_restorer_and_dropped_with_their_face(tmp_path):
    path = tmp_path / "i.sqlite"
    with AlbumIndex(path) as ix:
        ix.store_analysis("h1", "k", (100, 80), "ok", "", [_face("h1-0", "h1"), _face("h1-1", "h1")])
        ix.store_analysis("h2", "k", (100, 80), "ok", "", [_face("h2-0", "h2")])
        rng = np.random.default_rng(1)
        a, b, c = (rng.random(128).astype(np.float32) for _ in range(3))
        ix.store_looks("model:aaa", {"h1-0": a, "h2-0": b})
        ix.store_looks("model:bbb", {"h1-0": c})
    with AlbumIndex(path) as ix:  # kept across connections
        assert sorted(ix.looks("model:aaa")) == ["h1-0", "h2-0"]
        assert np.array_equal(ix.looks("model:aaa")["h1-0"], a) and np.array_equal(ix.looks("model:bbb")["h1-0"], c)
        assert ix.looks("other") == {}
        assert np.array_equal(ix.looks()["h1-0"], a)  # any restorer: the first key by name
        ix.store_analysis("h1", "k2", (100, 80), "ok", "", [_face("h1-0", "h1")])  # analysed again
        assert sorted(ix.looks()) == ["h2-0"]  # a look belongs to the analysis it was made from


def test_analyses_stored_in_one_transaction_commit_or_roll_back_together(tmp_path):
    """The driver stores a group of analyses in one transaction (nested ones join it)."""
    path = tmp_path / "index.sqlite"
    with AlbumIndex(path) as ix:
        with ix.transaction():
            ix.store_analysis("h1", "k", (100, 80), "ok", "", [_face("h1-0", "h1")])
            ix.store_analysis("h2", "k", (100, 80), "ok", "", [_face("h2-0", "h2")])
            with AlbumIndex(path) as reader:  # another connection sees nothing before the commit
                assert reader.analysis_done("h1", "k") is None
        assert ix.analysis_done("h1", "k") == ("ok", "") and ix.analysis_done("h2", "k") == ("ok", "")
        with pytest.raises(RuntimeError), ix.transaction():
            ix.store_analysis("h3", "k", (100, 80), "ok", "", [_face("h3-0", "h3")])
            raise RuntimeError("the group failed")
        assert ix.analysis_done("h3", "k") is None and [f.face_id for f in ix.faces()] == ["h1-0", "h2-0"]
