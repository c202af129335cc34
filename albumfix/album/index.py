"""The album index: one SQLite database (WAL) per output folder, `OUT/.albumfix/index.sqlite`.

It makes every stage resumable and incremental:
- `files`: album path -> content hash, cached on (size, mtime) so unchanged files are not re-hashed;
- `photos` + `faces`: analysis results per *content hash* and analysis-settings key;
- `assignments`, `people`, `constraints`: grouping, with manual corrections that re-grouping
  never overwrites;
- `looks`: a second look at a damaged face: the identity embedding of its restoration without
  guidance, per restorer (albumfix.plan verifies the face again with it); dropped with the face;
- `outputs`: per album path, the key of the inputs+settings its output was made from, and whether
  the write finished (`pending` rows mark a write a killed run may have left half done).

Every write is a short transaction; a SIGKILL loses at most the photos in flight (analysis embeds
the faces of a few photos together: `albumfix.stages.analyse.EMBED_BATCH_PHOTOS`). File names
that are not valid UTF-8 (any byte sequence is a Linux name) are stored as BLOBs of their bytes.
Schema changes are numbered migrations applied in order (`meta.schema_version`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE files (relpath TEXT PRIMARY KEY, content_hash TEXT NOT NULL,
                        size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
    CREATE TABLE photos (content_hash TEXT PRIMARY KEY, analysis_key TEXT NOT NULL,
                         width INTEGER, height INTEGER, status TEXT NOT NULL, reason TEXT);
    CREATE TABLE faces (face_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, idx INTEGER NOT NULL,
                        box TEXT NOT NULL, score REAL NOT NULL, landmarks BLOB NOT NULL,
                        embedding BLOB, embedder TEXT NOT NULL, quality TEXT NOT NULL);
    CREATE INDEX faces_by_photo ON faces(content_hash);
    CREATE TABLE people (person_id TEXT PRIMARY KEY, name TEXT);
    CREATE TABLE assignments (face_id TEXT PRIMARY KEY, person_id TEXT NOT NULL,
                              manual INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE constraints (kind TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL DEFAULT '',
                              PRIMARY KEY (kind, a, b));
    CREATE TABLE outputs (relpath TEXT PRIMARY KEY, output_relpath TEXT NOT NULL,
                          output_key TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL,
                          detail TEXT NOT NULL DEFAULT '{}', updated REAL NOT NULL);
    """,
    # 2: each sharp face's resolution ladder (R x D float32, NULL when none)
    "ALTER TABLE faces ADD COLUMN ladder BLOB",
    # 3: second looks (D float32 embeddings of unguided restorations, per restorer key)
    """
    CREATE TABLE looks (face_id TEXT NOT NULL, look_key TEXT NOT NULL, embedding BLOB NOT NULL,
                        PRIMARY KEY (face_id, look_key));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class FaceRow:
    """A stored face. landmarks (68, 2) float32 photo px; embedding (D,) float32 or None;
    quality: the FaceQuality fields (decisions are derived from it at plan time, never stored);
    ladder: (R, D) float32, the face seen at lower resolutions (`DetectedFace.ladder`) or None."""

    face_id: str
    content_hash: str
    idx: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray | None
    embedder: str
    quality: dict
    ladder: np.ndarray | None = None


@dataclass
class OutputRow:
    relpath: str
    output_relpath: str
    output_key: str
    state: str
    status: str
    detail: dict


class AlbumIndex:
    """Typed access to the index database. Use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def __enter__(self) -> "AlbumIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"index {self.path} has schema {version}, newer than this albumfix ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    self.db.execute(statement)
                self.db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(number + 1),)
                )

    def transaction(self):
        """`with index.transaction():` one atomic unit of writes (nested ones join it)."""
        return _Transaction(self.db)

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # --- files -------------------------------------------------------------------------------
    def cached_hash(self, relpath: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute(
            "SELECT content_hash FROM files WHERE relpath=? AND size=? AND mtime_ns=?",
            (_stored(relpath), size, mtime_ns),
        ).fetchone()
        return row[0] if row else None

    def remember_hash(self, relpath: str, size: int, mtime_ns: int, digest: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (_stored(relpath), digest, size, mtime_ns)
        )

    def face_photos(self) -> dict[str, str]:
        """face_id -> album-relative path of a file with the face's photo content (the first by
        name); faces whose content no scanned file has any more are absent."""
        rows = self.db.execute("SELECT face_id, MIN(relpath) FROM faces JOIN files USING (content_hash) "
                               "GROUP BY face_id")
        return {face_id: _name(relpath) for face_id, relpath in rows.fetchall()}

    # --- analysis ----------------------------------------------------------------------------
    def analysis_done(self, content_hash: str, analysis_key: str) -> tuple[str, str] | None:
        """(status, reason) when this content was analysed with this key, else None."""
        row = self.db.execute(
            "SELECT status, reason FROM photos WHERE content_hash=? AND analysis_key=?",
            (content_hash, analysis_key),
        ).fetchone()
        return (row[0], row[1] or "") if row else None

    def store_analysis(self, content_hash: str, analysis_key: str, size: tuple[int, int] | None,
                       status: str, reason: str, faces: list[FaceRow]) -> None:
        """Replace the analysis of one photo (faces included) in one transaction."""
        width, height = size if size else (None, None)
        with self.transaction():
            old = [r[0] for r in self.db.execute(
                "SELECT face_id FROM faces WHERE content_hash=?", (content_hash,))]
            keep = {f.face_id for f in faces}
            for face_id in old:
                if face_id not in keep:
                    self.db.execute("DELETE FROM assignments WHERE face_id=? AND manual=0", (face_id,))
                self.db.execute("DELETE FROM looks WHERE face_id=?", (face_id,))
            self.db.execute("DELETE FROM faces WHERE content_hash=?", (content_hash,))
            self.db.execute(
                "INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?)",
                (content_hash, analysis_key, width, height, status, reason),
            )
            for f in faces:
                self.db.execute(
                    "INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (f.face_id, f.content_hash, f.idx, json.dumps(list(f.box)), f.score,
                     np.asarray(f.landmarks, np.float32).tobytes(),
                     None if f.embedding is None else np.asarray(f.embedding, np.float32).tobytes(),
                     f.embedder, json.dumps(f.quality),
                     None if f.ladder is None else np.asarray(f.ladder, np.float32).tobytes()),
                )

    def faces(self, content_hashes: list[str] | None = None) -> list[FaceRow]:
        """Stored faces, ordered by face id; only those of `content_hashes` when given."""
        rows = self.db.execute("SELECT * FROM faces ORDER BY face_id").fetchall()
        wanted = set(content_hashes) if content_hashes is not None else None
        return [_face_row(r) for r in rows if wanted is None or r[1] in wanted]

    def store_looks(self, look_key: str, looks: dict[str, np.ndarray]) -> None:
        """Keep second looks (face id -> (D,) float32 unit embedding) made by restorer `look_key`."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO looks VALUES (?, ?, ?)",
                                [(fid, look_key, np.asarray(v, np.float32).tobytes())
                                 for fid, v in sorted(looks.items())])

    def looks(self, look_key: str | None = None) -> dict[str, np.ndarray]:
        """face id -> (D,) float32 second look made by restorer `look_key` (None: by any restorer;
        one per face, of the first key by name)."""
        rows = self.db.execute("SELECT face_id, look_key, embedding FROM looks ORDER BY face_id, look_key DESC")
        return {fid: np.frombuffer(blob, np.float32).copy() for fid, key, blob in rows
                if look_key is None or key == look_key}

    # --- grouping ----------------------------------------------------------------------------
    def assignments(self) -> dict[str, tuple[str, bool]]:
        """face_id -> (person_id, manual)."""
        return {r[0]: (r[1], bool(r[2])) for r in self.db.execute("SELECT * FROM assignments")}

    def replace_automatic_assignments(self, labels: dict[str, str]) -> None:
        """Store automatic grouping; manual rows are kept as they are."""
        with self.transaction():
            self.db.execute("DELETE FROM assignments WHERE manual=0")
            manual = {r[0] for r in self.db.execute("SELECT face_id FROM assignments")}
            self.db.executemany(
                "INSERT INTO assignments VALUES (?, ?, 0)",
                [(f, p) for f, p in sorted(labels.items()) if f not in manual],
            )

    def set_manual(self, face_ids: list[str], person_id: str) -> None:
        self.set_manual_assignments({f: person_id for f in face_ids})

    def set_manual_assignments(self, people: dict[str, str]) -> None:
        """Pin faces to people (face_id -> person_id) in one transaction."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO assignments VALUES (?, ?, 1)", sorted(people.items()))

    def exclude_faces(self, face_ids: list[str]) -> None:
        """Never group these faces again (and drop their current assignment)."""
        with self.transaction():
            for face_id in face_ids:
                self.db.execute("INSERT OR IGNORE INTO constraints VALUES ('exclude', ?, '')", (face_id,))
                self.db.execute("DELETE FROM assignments WHERE face_id=?", (face_id,))

    def person_names(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT person_id, name FROM people") if r[1]}

    def set_person_name(self, person_id: str, name: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO people VALUES (?, ?)", (person_id, name))

    def add_constraint(self, kind: str, a: str, b: str = "") -> None:
        self.db.execute("INSERT OR IGNORE INTO constraints VALUES (?, ?, ?)", (kind, a, b))

    def constraints(self, kind: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT a, b FROM constraints WHERE kind=? ORDER BY a, b", (kind,))]

    # --- outputs -----------------------------------------------------------------------------
    def output(self, relpath: str) -> OutputRow | None:
        row = self.db.execute(
            "SELECT relpath, output_relpath, output_key, state, status, detail FROM outputs WHERE relpath=?",
            (_stored(relpath),),
        ).fetchone()
        return _output_row(row) if row else None

    def outputs_by_target(self) -> dict[str, OutputRow]:
        rows = self.db.execute(
            "SELECT relpath, output_relpath, output_key, state, status, detail FROM outputs").fetchall()
        return {row.output_relpath: row for row in map(_output_row, rows)}

    def mark_output(self, row: OutputRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_stored(row.relpath), _stored(row.output_relpath), row.output_key, row.state, row.status,
             json.dumps(row.detail), time.time()),
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception); inside another transaction it
    joins that one, which commits or rolls back the whole."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outermost = False

    def __enter__(self):
        self.outermost = not self.db.in_transaction
        if self.outermost:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_):
        if self.outermost:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _face_row(r: tuple) -> FaceRow:
    return FaceRow(
        face_id=r[0], content_hash=r[1], idx=r[2], box=tuple(json.loads(r[3])), score=r[4],
        landmarks=np.frombuffer(r[5], np.float32).reshape(68, 2).copy(),
        embedding=None if r[6] is None else np.frombuffer(r[6], np.float32).copy(),
        embedder=r[7], quality=json.loads(r[8]),
        ladder=None if r[9] is None or r[6] is None
        else np.frombuffer(r[9], np.float32).reshape(-1, len(r[6]) // 4).copy(),
    )


def _output_row(r: tuple) -> OutputRow:
    return OutputRow(_name(r[0]), _name(r[1]), r[2], r[3], r[4], json.loads(r[5]))


def _stored(name: str) -> str | bytes:
    """A file name as stored: itself, or the bytes of a name that is not valid UTF-8 (os.fsdecode
    made it; SQLite keeps them as a BLOB)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _name(stored: str | bytes) -> str:
    """The file name `_stored` stored."""
    return os.fsdecode(stored) if isinstance(stored, bytes) else stored
