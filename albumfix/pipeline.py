"""Runs the stages in order against the album index: scan, analyse, group, choose, restore, compose.

No model code lives here: each stage calls its package (album, faces, people, restore) and stores
results in the index, so a re-run recomputes only what changed and a killed run resumes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from albumfix import __version__
from albumfix.album import imageio
from albumfix.atomic import atomic_copy, remove_stale_temps
from albumfix.album.index import AlbumIndex, FaceRow, OutputRow
from albumfix.album.scan import AlbumFile, content_hash, scan_album
from albumfix.errors import AlbumError, FatalError, UsageError
from albumfix.settings import Settings

log = logging.getLogger("albumfix")

INDEX_DIR = ".albumfix"
ANALYSIS_FIELDS = ("faces", "landmarks", "models_dir", "upsample", "cnn_fallback", "max_megapixels")
ANALYSIS_VERSION = 2  # bump when what analysis computes changes (2: edge detail, equalised HOG retry)
RESTORE_FIELDS = ("model", "weights", "strength", "precision", "guard")


class Progress(Protocol):
    """What the pipeline tells a progress display; the CLI supplies a rich one on a TTY."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class PhotoReport:
    """One album file's outcome. path relative to the album, output relative to OUT."""

    path: str
    status: str = "unchanged"  # restored | unchanged | failed | skipped
    reason: str = ""
    output: str | None = None
    faces: list[dict] = field(default_factory=list)


@dataclass
class RunReport:
    """The JSON summary (`--json`) with stable keys; later stages only add keys."""

    album: Path
    output: Path
    photos: list[PhotoReport]
    people: list[dict]
    seconds: float
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if any(p.status == "failed" for p in self.photos) else 0

    def to_json(self) -> dict:
        count = lambda status: sum(p.status == status for p in self.photos)  # noqa: E731
        return {
            "version": __version__,
            "album": str(self.album),
            "output": str(self.output),
            "dry_run": self.dry_run,
            "summary": {
                "photos": len(self.photos),
                "restored": count("restored"),
                "unchanged": count("unchanged"),
                "failed": count("failed"),
                "skipped": count("skipped"),
                "faces": sum(len(p.faces) for p in self.photos),
                "people": len(self.people),
                "seconds": round(self.seconds, 3),
            },
            "photos": [p.__dict__ for p in self.photos],
            "people": self.people,
        }


def resolve_paths(album: Path, settings: Settings) -> tuple[Path, Path]:
    """(album, out) as absolute paths; refuses a missing album and an OUT inside the album."""
    album = Path(album).expanduser()
    if not album.exists():
        raise AlbumError(f"album not found: {album}")
    if not album.is_dir():
        raise AlbumError(f"album is not a folder: {album}")
    if not os.access(album, os.R_OK | os.X_OK):
        raise AlbumError(f"album is not readable: {album}")
    album = album.resolve()
    out = settings.output or album.parent / f"{album.name}-restored"
    out = Path(out).expanduser().resolve()
    if out == album or out.is_relative_to(album):
        raise UsageError(f"output folder {out} is inside the album; albumfix never writes there")
    return album, out


def index_path(out: Path) -> Path:
    return out / INDEX_DIR / "index.sqlite"


class Pipeline:
    """One run over one album. `run(restore=False)` is `albumfix scan`."""

    def __init__(self, album: Path, settings: Settings, progress: Progress | None = None):
        self.settings = settings
        self.album, self.out = resolve_paths(album, settings)
        self.progress = progress or _NoProgress()
        imageio.set_max_megapixels(settings.max_megapixels)
        self._analyzer = None
        self._engine = None

    # --- orchestration -----------------------------------------------------------------------
    def run(self, restore: bool = True) -> RunReport:
        started = time.perf_counter()
        with self._index() as ix:
            files = self._scan(ix)
            reports = {f.relpath: PhotoReport(path=f.relpath) for f in files}
            hashes = self._hash_files(ix, files, reports)
            self._analyse(ix, files, hashes, reports)
            faces = ix.faces(sorted(set(hashes.values())))
            plan = self._plan(ix, faces)
            for f in files:
                if f.relpath in hashes and reports[f.relpath].status != "failed":
                    reports[f.relpath].faces = plan.face_reports(hashes[f.relpath])
            if restore:
                self._restore(ix, files, hashes, plan, reports)
            people = plan.people_report()
        report = RunReport(self.album, self.out, [reports[f.relpath] for f in files], people,
                           time.perf_counter() - started, self.settings.dry_run)
        if restore and not self.settings.dry_run:
            from albumfix.report import write_html_report

            write_html_report(report, self.out)
        return report

    def _index(self) -> AlbumIndex:
        """The album index; a throw-away copy of it for --dry-run, so nothing is written."""
        path = index_path(self.out)
        if not self.settings.dry_run:
            if self.out.exists():
                remove_stale_temps(self.out)
            return AlbumIndex(path)
        scratch = Path(tempfile.mkdtemp(prefix="albumfix-dry-run-"))
        if path.exists():
            import sqlite3

            with sqlite3.connect(path) as src, sqlite3.connect(scratch / "index.sqlite") as dst:
                src.backup(dst)
        ix = AlbumIndex(scratch / "index.sqlite")
        original_close = ix.close

        def close_and_clean() -> None:
            original_close()
            shutil.rmtree(scratch, ignore_errors=True)

        ix.close = close_and_clean
        return ix

    # --- scan --------------------------------------------------------------------------------
    def _scan(self, ix: AlbumIndex) -> list[AlbumFile]:
        files = scan_album(self.album, exclude=self.out)
        log.info("album %s: %d photo files", self.album, len(files))
        return files

    def _hash_files(self, ix: AlbumIndex, files: list[AlbumFile],
                    reports: dict[str, PhotoReport]) -> dict[str, str]:
        """relpath -> content hash; unreadable files are reported failed."""
        hashes: dict[str, str] = {}
        self.progress.stage("hash", len(files))
        for f in files:
            digest = ix.cached_hash(f.relpath, f.size, f.mtime_ns)
            if digest is None:
                try:
                    digest = content_hash(f.path)
                except OSError as exc:
                    self._fail(reports[f.relpath], f"cannot read file: {exc.strerror or exc}")
                    self.progress.advance()
                    continue
                ix.remember_hash(f.relpath, f.size, f.mtime_ns, digest)
            hashes[f.relpath] = digest
            self.progress.advance()
        return hashes

    # --- analyse -----------------------------------------------------------------------------
    def _analysis_key(self) -> str:
        return f"{self.settings.key(*ANALYSIS_FIELDS)}-v{ANALYSIS_VERSION}"

    def analyzer(self):
        """The face analyzer, created on first use (re-runs with nothing new never load it)."""
        if self._analyzer is None:
            from albumfix.faces.analyzer import BackendUnavailable
            from albumfix.faces.backends import create_analyzer

            s = self.settings
            try:
                self._analyzer = create_analyzer(
                    faces=s.faces, landmarks=s.landmarks,
                    models_dir=str(s.models_dir) if s.models_dir else None,
                    upsample=s.upsample, cnn_fallback=s.cnn_fallback, device=s.device,
                )
            except (BackendUnavailable, ValueError) as exc:  # ValueError: an unknown device name
                raise FatalError(str(exc)) from exc
        return self._analyzer

    def _analyse(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 reports: dict[str, PhotoReport]) -> None:
        key = self._analysis_key()
        first_path = {}
        for f in files:
            if f.relpath in hashes:
                first_path.setdefault(hashes[f.relpath], f)
        todo = [h for h in first_path if ix.analysis_done(h, key) is None]
        self.progress.stage("analyse", len(todo))
        for digest in todo:
            self._analyse_one(ix, digest, first_path[digest], key)
            self.progress.advance()
        for relpath, digest in hashes.items():
            status, reason = ix.analysis_done(digest, key)
            if status == "failed":
                self._fail(reports[relpath], reason)

    def _analyse_one(self, ix: AlbumIndex, digest: str, f: AlbumFile, key: str) -> None:
        from albumfix.faces.quality import assess_face

        try:
            photo = imageio.decode(f.path)
        except imageio.ImageDecodeError as exc:
            ix.store_analysis(digest, key, None, "failed", str(exc), [])
            return
        rgb = photo.rgb8()
        rows = []
        for idx, face in enumerate(self.analyzer().analyse(rgb)):
            quality = assess_face(rgb, face)
            rows.append(FaceRow(
                face_id=f"{digest[:16]}-{idx}", content_hash=digest, idx=idx,
                box=tuple(float(v) for v in face.box), score=float(face.score),
                landmarks=np.asarray(face.landmarks, np.float32),
                embedding=None if face.embedding is None else np.asarray(face.embedding, np.float32),
                embedder=face.embedder, quality=_jsonable(quality.__dict__),
            ))
        log.debug("%s: %d faces", f.relpath, len(rows))
        ix.store_analysis(digest, key, (photo.width, photo.height), "ok", "", rows)

    # --- group + choose ------------------------------------------------------------------------
    def _plan(self, ix: AlbumIndex, faces: list[FaceRow]) -> "Plan":
        from albumfix.plan import build_plan

        return build_plan(ix, faces, self.settings, self.progress)

    # --- restore + compose ---------------------------------------------------------------------
    def engine(self):
        """The restoration engine, created on first use."""
        if self._engine is None:
            from albumfix.restore.engine import RestoreEngine

            s = self.settings
            try:
                self._engine = RestoreEngine(model=s.model, weights=s.weights, device=s.device,
                                             batch_size=s.batch_size, precision=s.precision)
            except Exception as exc:  # any failure to load the model or device is fatal
                raise FatalError(f"restoration model unusable: {exc}") from exc
        return self._engine

    def _restore(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 plan: "Plan", reports: dict[str, PhotoReport]) -> None:
        from albumfix.compose import Composer

        owned = ix.outputs_by_target()
        composer = Composer(self, ix, plan, hashes, files)
        self.progress.stage("restore", len(files))
        for f in files:
            report = reports[f.relpath]
            if report.status == "failed":
                self.progress.advance()
                continue
            target_rel = f.relpath
            target = self.out / target_rel
            digest = hashes[f.relpath]
            to_restore = plan.faces_to_restore(digest)
            out_key = self._output_key(digest, plan, to_restore)
            report.output = target_rel
            previous = ix.output(f.relpath)
            if (previous and previous.state == "done" and previous.output_key == out_key
                    and previous.output_relpath == target_rel and target.exists()):
                report.status = previous.status
                report.reason = previous.detail.get("reason", "")
                plan.attach_restored(report, previous.detail.get("restored", {}))
                self.progress.advance()
                continue
            refusal = self._overwrite_refusal(f, target, target_rel in owned)
            if refusal:
                report.status, report.reason, report.output = "skipped", refusal, None
                self.progress.advance()
                continue
            if self.settings.dry_run:
                report.status = "restored" if to_restore else "unchanged"
                report.reason = "dry run: nothing written"
                self.progress.advance()
                continue
            row = OutputRow(f.relpath, target_rel, out_key, "pending", "", {})
            ix.mark_output(row)
            if not to_restore:
                report.reason = "no face needs restoration" if report.faces else "no face found"
                atomic_copy(f.path, target)
                self._finish(ix, row, report, "unchanged", {})
                self.progress.advance()
            else:
                composer.submit(f, target, row, report, to_restore)
        composer.flush()

    def _finish(self, ix: AlbumIndex, row: OutputRow, report: PhotoReport, status: str,
                restored: dict) -> None:
        report.status = status
        row.state, row.status = "done", status
        row.detail = {"reason": report.reason, "restored": restored}
        ix.mark_output(row)

    @cached_property
    def weights_digest(self) -> str:
        """SHA-256 of the weights file restore uses (given, imported or shipped; "none" when
        there is none), read once per run: new weights mean new outputs, even at the same path."""
        from albumfix.restore.weights import file_sha256, find_weights

        path = self.settings.weights or find_weights(self.settings.model)
        return file_sha256(path) if path and Path(path).is_file() else "none"

    def _output_key(self, digest: str, plan: "Plan", to_restore: list[str]) -> str:
        """Hash of everything the output depends on: the photo, the restore settings and
        weights, and for each restored face the exemplar used (a new exemplar means a new
        output)."""
        parts = {
            "photo": digest,
            "faces": [[fid, plan.exemplar_of(fid)] for fid in to_restore],
            "settings": self.settings.key(*RESTORE_FIELDS) if to_restore else "copy",
            "weights": self.weights_digest if to_restore else "",
            "version": __version__ if to_restore else "",
        }
        return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=12).hexdigest()

    def _overwrite_refusal(self, f: AlbumFile, target: Path, owned: bool) -> str | None:
        """Reason to leave an existing output alone, or None to (re)write it.
        Files albumfix wrote itself (tracked in the index) are always albumfix's to update."""
        if owned or not target.exists():
            return None
        policy = self.settings.overwrite
        if policy == "always":
            return None
        if policy == "if-newer" and f.mtime_ns > target.stat().st_mtime_ns:
            return None
        return f"output exists and was not written by albumfix (--overwrite {policy})"

    @staticmethod
    def _fail(report: PhotoReport, reason: str) -> None:
        report.status, report.reason = "failed", reason
        log.warning("%s: %s", report.path, reason)


def _jsonable(values: dict) -> dict:
    """Dataclass fields as JSON-safe builtins (numpy scalars to float)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out
