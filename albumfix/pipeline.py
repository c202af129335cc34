"""Runs the stages in order against the album index: scan, analyse, group, choose, restore, compose.

No model code lives here: each stage calls its package (album, faces, people, restore) and stores
results in the index, so a re-run recomputes only what changed and a killed run resumes.

A run holds the output folder's lock throughout (album/lock.py). Each photo's work is isolated:
an exception from one photo (decoding, analysis, restoration, writing) marks that photo failed
with a one-line reason and the run goes on; only what makes every photo impossible (`as_fatal`:
model or device unusable, no space left, index unusable) stops it, and the report then says so.
A stop request (SIGINT/SIGTERM, interrupt.py) is honoured between photos; photos not reached
are reported `pending` and the next run does them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from albumfix import __version__
from albumfix.album import imageio
from albumfix.atomic import atomic_copy, remove_stale_temps
from albumfix.album.index import AlbumIndex, FaceRow, OutputRow
from albumfix.album.lock import output_lock
from albumfix.album.scan import AlbumFile, content_hash, scan_album, select_files
from albumfix.errors import (EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, AlbumError, FatalError, UsageError,
                             as_fatal, exit_code_for_signal, one_line)
from albumfix.interrupt import StopRequest
from albumfix.settings import Settings

log = logging.getLogger("albumfix")

INDEX_DIR = ".albumfix"
ANALYSIS_FIELDS = ("faces", "landmarks", "models_dir", "upsample", "cnn_fallback", "max_megapixels")
ANALYSIS_VERSION = 5  # bump when what analysis computes changes (2: edge detail, equalised HOG retry;
# 3: denoised HOG retry, a second search in damaged photos; 4: resolution ladders of sharp faces;
# 5: CNN on a non-local-means copy, CNN in the search of a damaged photo with room for a face)
RESTORE_FIELDS = ("model", "weights", "strength", "precision", "guard")
# Analysis embeds the faces of up to this many photos (decoded pixels: bytes) in one batch: dlib's
# torch network runs about 4x faster per face at batch 24 than at 1 on a CPU.
EMBED_BATCH_PHOTOS = 8
EMBED_BATCH_BYTES = 48_000_000


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
class _Located:
    """A photo analysed up to its identity embeddings (`Pipeline._locate`): size (width,
    height) px; rgb (H, W, 3) uint8; faces located (no embedding yet) and their FaceQuality."""

    digest: str
    relpath: str
    size: tuple[int, int]
    rgb: np.ndarray
    faces: list
    qualities: list


@dataclass
class PhotoReport:
    """One album file's outcome. path relative to the album, output relative to OUT."""

    path: str
    status: str = "pending"  # restored | unchanged | failed | skipped | pending (not reached)
    reason: str = ""
    output: str | None = None
    faces: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """The photo's object in `--json`'s `photos` and on a `--jsonl` line."""
        return dict(vars(self))


@dataclass
class RunReport:
    """The JSON summary (`--json`) with stable keys; later stages only add keys."""

    album: Path
    output: Path
    photos: list[PhotoReport]
    people: list[dict]
    seconds: float
    dry_run: bool = False
    interrupted: str | None = None  # "SIGINT" | "SIGTERM" when a signal stopped the run early
    error: str | None = None  # the fatal error that stopped the run

    @property
    def exit_code(self) -> int:
        """4 after a fatal error, 128 + signal when stopped by one, 1 when a photo failed, else 0."""
        if self.error is not None:
            return EXIT_FATAL
        if self.interrupted is not None:
            return exit_code_for_signal(signal.Signals[self.interrupted])
        return EXIT_SOME_FAILED if any(p.status == "failed" for p in self.photos) else EXIT_OK

    def to_json(self, photos: bool = True) -> dict:
        """The `--json` document; without `photos` it is `--jsonl`'s last line."""
        count = lambda status: sum(p.status == status for p in self.photos)  # noqa: E731
        data = {
            "version": __version__,
            "album": str(self.album),
            "output": str(self.output),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "error": self.error,
            "summary": {
                "photos": len(self.photos),
                "restored": count("restored"),
                "unchanged": count("unchanged"),
                "failed": count("failed"),
                "skipped": count("skipped"),
                "pending": count("pending"),
                "faces": sum(len(p.faces) for p in self.photos),
                "people": len(self.people),
                "seconds": round(self.seconds, 3),
            },
            "photos": [p.to_json() for p in self.photos],
            "people": self.people,
        }
        if not photos:
            del data["photos"]
        return data


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
    """One run over one album. `run(restore=False)` is `albumfix scan`.

    files_from: album files (paths as `--files-from` gives them) to limit the run to; None: all.
    stop: read between photos (interrupt.stop_on_signals); on_photo: called with each photo's
    final report as soon as it is known (`--jsonl`)."""

    def __init__(self, album: Path, settings: Settings, progress: Progress | None = None,
                 files_from: list[str] | None = None, stop: StopRequest | None = None,
                 on_photo: Callable[[PhotoReport], None] | None = None):
        self.settings = settings
        self.album, self.out = resolve_paths(album, settings)
        self.progress = progress or _NoProgress()
        self.files_from = files_from
        self.stop = stop or StopRequest()
        self.on_photo = on_photo
        imageio.set_max_megapixels(settings.max_megapixels)
        self._analyzer = None
        self._engine = None
        self._published: set[str] = set()
        self._planned: tuple["Plan", dict[str, AlbumFile]] | None = None  # for the review (`_write_pages`)

    # --- orchestration -----------------------------------------------------------------------
    def run(self, restore: bool = True) -> RunReport:
        started = time.perf_counter()
        with self._lock(), self._index() as ix:
            files, others, rejected = self._select()
            reports = {f.relpath: PhotoReport(path=f.relpath) for f in files}
            strays = [PhotoReport(path=entry) for entry in rejected]
            for stray in strays:
                self._fail(stray, f"--files-from: {rejected[stray.path]}")
            people, error = [], None
            try:
                people = self._stages(ix, files, others, reports, restore)
            except Exception as exc:
                error = self._fatal_reason(exc)
            report = RunReport(self.album, self.out, [*reports.values(), *strays], people,
                               time.perf_counter() - started, self.settings.dry_run,
                               self.stop.signal_name, error)
            self._close(report, restore)
        return report

    def _stages(self, ix: AlbumIndex, files: list[AlbumFile], others: list[AlbumFile],
                reports: dict[str, PhotoReport], restore: bool) -> list[dict]:
        """Hash, analyse, plan and (when `restore`) restore `files`; `others` (the album's files a
        --files-from run leaves out) only lend their stored analysis to grouping and exemplars.
        Returns the people report."""
        hashes = self._hash_files(ix, files, reports)
        self._analyse(ix, files, hashes, reports)
        if self.stop.requested:
            return []
        hashes = {relpath: h for relpath, h in hashes.items() if reports[relpath].status != "failed"}
        photo_files: dict[str, AlbumFile] = {}  # content hash -> a file with it (the first by name)
        for f in files:
            if f.relpath in hashes:
                photo_files.setdefault(hashes[f.relpath], f)
        for digest, f in self._context(ix, others).items():
            photo_files.setdefault(digest, f)
        plan = self._plan(ix, ix.faces(sorted(photo_files)))
        self._planned = (plan, photo_files)
        for relpath, digest in hashes.items():
            reports[relpath].faces = plan.face_reports(digest)
        if restore:
            self._restore(ix, files, hashes, photo_files, plan, reports)
        else:
            for relpath in hashes:
                reports[relpath].status = "unchanged"
        return plan.people_report()

    def _close(self, report: RunReport, restore: bool) -> None:
        """Say why unreached photos are pending, publish every photo not yet published, write
        report.html and the review (not after a fatal error or in a dry run)."""
        why = f"stopped by {report.interrupted}" if report.interrupted else "the run stopped on a fatal error"
        for photo in report.photos:
            if photo.status == "pending":
                photo.reason = f"not done: {why}; the next run does it"
            self._publish(photo)
        if restore and not self.settings.dry_run and report.error is None:
            try:
                self._write_pages(report)
            except Exception as exc:
                report.error = self._fatal_reason(exc)

    def _write_pages(self, report: RunReport) -> None:
        """OUT/report.html, then the review (albumfix.review) with the thumbnails it shows, when
        the run got as far as planning."""
        from albumfix.report import write_html_report
        from albumfix.review import build_review, faces_shown, write_review
        from albumfix.thumbnails import write_face_thumbnails

        write_html_report(report, self.out)
        if self._planned is None:
            return
        plan, photo_files = self._planned
        data = report.to_json()
        rows = {fid: p.row for fid, p in plan.faces.items() if p.row.content_hash in photo_files}
        thumbs = write_face_thumbnails(self.out, [(fid, rows[fid].landmarks, photo_files[rows[fid].content_hash].path)
                                                  for fid in sorted(faces_shown(data)) if fid in rows])
        photo_of = {fid: photo_files[row.content_hash].relpath for fid, row in rows.items()}
        write_review(build_review(data, photo_of, thumbs), self.out)

    def _fatal_reason(self, exc: Exception) -> str:
        """The message of the FatalError that `exc` stands for (errors.as_fatal), logged;
        re-raises `exc` when it stands for none (a bug, or a usage error)."""
        fatal = as_fatal(exc, index_path(self.out))
        if not isinstance(fatal, FatalError):
            raise exc
        log.error("%s", fatal)
        return str(fatal)

    def _lock(self):
        """OUT's lock for a run that writes (a dry run writes nothing and reads a snapshot)."""
        if self.settings.dry_run:
            return nullcontext()
        return output_lock(self.out, self.settings.wait, self.stop.raise_if_requested)

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
    def _select(self) -> tuple[list[AlbumFile], list[AlbumFile], dict[str, str]]:
        """(files this run processes, the album's other files, {--files-from entry: why it names
        no photo of the album})."""
        files = scan_album(self.album, exclude=self.out)
        log.info("album %s: %d photo files", self.album, len(files))
        if self.files_from is None:
            return files, [], {}
        chosen, rejected = select_files(self.album, files, self.files_from)
        names = {f.relpath for f in chosen}
        log.info("--files-from: %d of them, %d entries name no photo of the album", len(chosen), len(rejected))
        return chosen, [f for f in files if f.relpath not in names], rejected

    def _context(self, ix: AlbumIndex, others: list[AlbumFile]) -> dict[str, AlbumFile]:
        """content hash -> file, for the `others` whose hash the index holds (size and mtime
        unchanged) and whose analysis under the current settings succeeded; nothing is read."""
        key, found = self._analysis_key, {}
        for f in others:
            digest = ix.cached_hash(f.relpath, f.size, f.mtime_ns)
            if digest and digest not in found and ix.analysis_done(digest, key) == ("ok", ""):
                found[digest] = f
        return found

    def _hash_files(self, ix: AlbumIndex, files: list[AlbumFile],
                    reports: dict[str, PhotoReport]) -> dict[str, str]:
        """relpath -> content hash; unreadable files are reported failed."""
        hashes: dict[str, str] = {}
        self.progress.stage("hash", len(files))
        for f in files:
            if self.stop.requested:
                break
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
    @cached_property
    def _analysis_key(self) -> str:
        """Valid while the analysis settings, ANALYSIS_VERSION and the identity network for
        degraded faces (its bytes) are unchanged."""
        from albumfix.faces.backends import identity_weights_path

        identity = identity_weights_path()
        tag = hashlib.blake2b(identity.read_bytes(), digest_size=6).hexdigest() if identity else "dlib"
        return f"{self.settings.key(*ANALYSIS_FIELDS)}-v{ANALYSIS_VERSION}-id{tag}"

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
            except (BackendUnavailable, ValueError) as exc:  # ValueError: a device unknown or unusable here
                raise FatalError(str(exc)) from exc
        return self._analyzer

    def _analyse(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 reports: dict[str, PhotoReport]) -> None:
        key = self._analysis_key
        first_path = {}
        for f in files:
            if f.relpath in hashes:
                first_path.setdefault(hashes[f.relpath], f)
        todo = [h for h in first_path if ix.analysis_done(h, key) is None]
        errors: dict[str, str] = {}  # digest -> reason, not stored: a later albumfix may succeed
        self.progress.stage("analyse", len(todo))
        pending: list[_Located] = []
        for digest in todo:
            if self.stop.requested:
                break
            try:
                located = self._locate(ix, digest, first_path[digest], key)
            except Exception as exc:
                errors[digest] = self._photo_error(exc, "analysis failed")
                located = None
            if located is None:
                self.progress.advance()
                continue
            pending.append(located)
            if len(pending) >= EMBED_BATCH_PHOTOS or sum(p.rgb.size for p in pending) >= EMBED_BATCH_BYTES:
                self._embed_and_store(ix, pending, key, errors)
                pending = []
        self._embed_and_store(ix, pending, key, errors)
        for relpath, digest in hashes.items():
            status, reason = ("failed", errors[digest]) if digest in errors else ix.analysis_done(digest, key) or ("", "")
            if status == "failed":
                self._fail(reports[relpath], reason)

    def _locate(self, ix: AlbumIndex, digest: str, f: AlbumFile, key: str) -> "_Located | None":
        """Decode one photo, find its faces and their landmarks and judge them; None when it
        does not decode (stored as failed)."""
        from albumfix.faces.quality import assess_face, lacks_detail

        try:
            photo = imageio.decode(f.path)
        except imageio.ImageDecodeError as exc:
            ix.store_analysis(digest, key, None, "failed", str(exc), [])
            return None
        rgb = photo.rgb8()
        faces = self.analyzer().locate(rgb)
        qualities = [assess_face(rgb, face) for face in faces]
        if any(lacks_detail(q.detail) for q in qualities):  # a damaged photo: look again for hidden faces
            more = self.analyzer().search_more(rgb, faces)
            faces, qualities = faces + more, qualities + [assess_face(rgb, face) for face in more]
        return _Located(digest, f.relpath, (photo.width, photo.height), rgb, faces, qualities)

    def _embed_and_store(self, ix: AlbumIndex, pending: list["_Located"], key: str, errors: dict[str, str]) -> None:
        """Embed the faces of located photos in one batch, then store each photo's analysis;
        when the batch fails, each photo alone, so one bad photo fails only itself."""
        from albumfix.faces.quality import lacks_detail

        degraded = [[lacks_detail(q.detail) for q in p.qualities] for p in pending]
        try:
            described = self.analyzer().describe([(p.rgb, p.faces) for p in pending], degraded) if pending else []
        except Exception:
            described = None
        for k, p in enumerate(pending):
            try:
                faces = (described[k] if described is not None
                         else self.analyzer().describe([(p.rgb, p.faces)], [degraded[k]])[0])
                rows = [FaceRow(
                    face_id=f"{p.digest[:16]}-{idx}", content_hash=p.digest, idx=idx,
                    box=tuple(float(v) for v in face.box), score=float(face.score),
                    landmarks=np.asarray(face.landmarks, np.float32),
                    embedding=None if face.embedding is None else np.asarray(face.embedding, np.float32),
                    embedder=face.embedder, quality=_jsonable(quality.__dict__), ladder=face.ladder,
                ) for idx, (face, quality) in enumerate(zip(faces, p.qualities))]
                log.debug("%s: %d faces", p.relpath, len(rows))
                ix.store_analysis(p.digest, key, p.size, "ok", "", rows)
            except Exception as exc:
                errors[p.digest] = self._photo_error(exc, "analysis failed")
            self.progress.advance()

    # --- group + choose ------------------------------------------------------------------------
    def _plan(self, ix: AlbumIndex, faces: list[FaceRow]) -> "Plan":
        from albumfix.plan import build_plan

        return build_plan(ix, faces, self.settings, self.progress)

    # --- restore + compose ---------------------------------------------------------------------
    def engine(self):
        """The restoration engine, created on first use, after setting torch's CPU thread count
        explicitly (it changes pixels: restore/engine.py)."""
        if self._engine is None:
            import torch

            from albumfix.restore.engine import RestoreEngine

            s = self.settings
            try:
                torch.set_num_threads(cpu_threads(s.threads))
                self._engine = RestoreEngine(model=self.model_name, weights=s.weights, device=s.device,
                                             batch_size=s.batch_size, precision=s.precision)
            except Exception as exc:  # any failure to load the model or device is fatal
                raise FatalError(f"restoration model unusable: {exc}") from exc
        return self._engine

    def _restore(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 photo_files: dict[str, AlbumFile], plan: "Plan", reports: dict[str, PhotoReport]) -> None:
        """Write each photo's output, in album order, until a stop is requested; photos with
        faces to restore go through the Composer (the photos in hand are finished on a stop)."""
        from albumfix.compose import Composer

        owned = ix.outputs_by_target()
        composer = Composer(self, ix, plan, photo_files)
        self.progress.stage("restore", len(files))
        for f in files:
            if self.stop.requested:
                break
            if f.relpath in hashes:
                self._restore_one(ix, f, hashes[f.relpath], plan, reports[f.relpath],
                                  f.relpath in owned, composer)
            else:
                self.progress.advance()
        composer.flush()

    def _restore_one(self, ix: AlbumIndex, f: AlbumFile, digest: str, plan: "Plan",
                     report: PhotoReport, owned: bool, composer) -> None:
        """One photo: reuse its finished output, leave a foreign file alone, copy it or queue its
        faces for restoration."""
        target = self.out / f.relpath
        to_restore = plan.faces_to_restore(digest)
        out_key = self._output_key(digest, plan, to_restore)
        report.output = f.relpath
        previous = ix.output(f.relpath)
        if (previous and previous.state == "done" and previous.output_key == out_key
                and previous.output_relpath == f.relpath and target.exists()):
            report.status = previous.status
            report.reason = previous.detail.get("reason", "")
            plan.attach_restored(report, previous.detail.get("restored", {}))
        elif refusal := self._overwrite_refusal(f, target, owned):
            report.status, report.reason, report.output = "skipped", refusal, None
        elif self.settings.dry_run:
            report.status = "restored" if to_restore else "unchanged"
            report.reason = "dry run: nothing written"
        elif to_restore:
            row = OutputRow(f.relpath, f.relpath, out_key, "pending", "", {})
            ix.mark_output(row)
            composer.submit(f, target, row, report, to_restore)
            return
        else:
            self._copy(ix, f, target, OutputRow(f.relpath, f.relpath, out_key, "pending", "", {}), report)
        self._publish(report)
        self.progress.advance()

    def _copy(self, ix: AlbumIndex, f: AlbumFile, target: Path, row: OutputRow, report: PhotoReport) -> None:
        """A photo with nothing to restore: its bytes, unchanged."""
        ix.mark_output(row)
        report.reason = "no face needs restoration" if report.faces else "no face found"
        try:
            atomic_copy(f.path, target)
        except Exception as exc:
            self._fail(report, self._photo_error(exc, "could not copy"))
        else:
            self._finish(ix, row, report, "unchanged", {})

    def _finish(self, ix: AlbumIndex, row: OutputRow, report: PhotoReport, status: str,
                restored: dict) -> None:
        report.status = status
        row.state, row.status = "done", status
        row.detail = {"reason": report.reason, "restored": restored}
        ix.mark_output(row)
        self._publish(report)

    @cached_property
    def model_name(self) -> str:
        """The configuration restore runs: the one a given albumfix weights file was saved from
        (so `--weights FILE` alone is enough), else `--model`."""
        from albumfix.restore.weights import weights_config

        return (weights_config(self.settings.weights) if self.settings.weights else None) or self.settings.model

    @cached_property
    def weights_digest(self) -> str:
        """SHA-256 of the weights file restore uses (given, imported or shipped; "none" when
        there is none), read once per run: new weights mean new outputs, even at the same path."""
        from albumfix.restore.weights import file_sha256, find_weights

        path = self.settings.weights or find_weights(self.model_name)
        return file_sha256(path) if path and Path(path).is_file() else "none"

    def _output_key(self, digest: str, plan: "Plan", to_restore: list[str]) -> str:
        """Hash of everything the output depends on: the photo, the restore settings and
        weights, and for each restored face the exemplars used (a new exemplar means a new
        output)."""
        parts = {
            "photo": digest,
            "faces": [[fid, plan.exemplars_of(fid)] for fid in to_restore],
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

    def _fail(self, report: PhotoReport, reason: str) -> None:
        report.status, report.reason = "failed", reason
        log.warning("%s: %s", report.path, reason)
        self._publish(report)

    def _photo_error(self, exc: Exception, what: str) -> str:
        """`what: Type: message`, the one-line reason a photo failed because of `exc`; raises
        the run-ending error instead when `exc` makes every photo impossible (errors.as_fatal)."""
        fatal = as_fatal(exc, index_path(self.out))
        if fatal is exc:
            raise exc
        if fatal is not None:
            raise fatal from exc
        return f"{what}: {one_line(exc)}"

    def _publish(self, report: PhotoReport) -> None:
        """Hand a photo's final report to `on_photo`, once."""
        if self.on_photo is not None and report.path not in self._published:
            self._published.add(report.path)
            self.on_photo(report)


def cpu_threads(requested: int) -> int:
    """torch CPU threads: `requested`, or for 0 the CPUs this process may use (the same for
    every run on one machine, unlike torch's default, which follows OMP_NUM_THREADS)."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _jsonable(values: dict) -> dict:
    """Dataclass fields as JSON-safe builtins (numpy scalars to float)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out
