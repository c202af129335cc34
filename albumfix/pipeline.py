"""The driver of a run: scan, analyse, group, choose, restore, compose, against the album index.

The driver is the one owner of the run's state: OUT's lock, the SQLite index, the reports. It
selects and hashes the files, asks a backend (albumfix.distributed) to run the stages
(albumfix.stages: functions of their inputs, which never call back here) on what the index says
is pending, stores what comes back, plans from the index (grouping, verification, exemplars:
cheap, no model work) and records each photo's end. A re-run recomputes only what changed and a
killed run resumes.

Each photo's work is isolated: an exception from one photo (decoding, analysis, restoration,
writing) marks that photo failed with a one-line reason and the run goes on; only what makes
every photo impossible (`as_fatal`: model or device unusable, no space left, index unusable)
stops it, and the report then says so. A stop request (SIGINT/SIGTERM, interrupt.py) is honoured
between photos; photos not reached are reported `pending` and the next run does them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from albumfix import __version__
from albumfix.album import imageio
from albumfix.album.index import AlbumIndex, FaceRow, OutputRow
from albumfix.album.scan import AlbumFile, content_hash, scan_album, select_files
from albumfix.atomic import atomic_copy
from albumfix.interrupt import StopRequest
from albumfix.settings import Settings
from albumfix.stages.analyse import PhotoToAnalyse, analysis_key
from albumfix.stages.chunks import analysis_groups
from albumfix.stages.context import Progress, RunContext
from albumfix.stages.models import Models
from albumfix.stages.outcomes import Outcomes, PhotoReport, RunReport, photo_error, run_error
from albumfix.stages.restore import ExemplarRef, FaceTask, PhotoTask

if TYPE_CHECKING:
    from albumfix.plan import Plan

log = logging.getLogger("albumfix")

RESTORE_FIELDS = ("model", "weights", "strength", "precision", "guard")


class Pipeline:
    """One run over one album. `run(restore=False)` is `albumfix scan`.

    files_from: album files (paths as `--files-from` gives them) to limit the run to; None: all.
    stop: read between photos (interrupt.stop_on_signals); on_photo: called with each photo's
    final report as soon as it is known (`--jsonl`)."""

    def __init__(self, album: Path, settings: Settings, progress: Progress | None = None,
                 files_from: list[str] | None = None, stop: StopRequest | None = None,
                 on_photo: Callable[[PhotoReport], None] | None = None):
        self.ctx = RunContext.create(album, settings, progress, stop)
        self.settings = settings
        self.files_from = files_from
        self.outcomes = Outcomes(on_photo)
        self.models = Models(settings)
        self.backend = self._backend()
        imageio.set_max_megapixels(settings.max_megapixels)
        self._planned: tuple[Plan, dict[str, AlbumFile]] | None = None  # for the review (`_write_pages`)

    def _backend(self):
        """The backend the settings ask for (albumfix.distributed); ray is imported only when chosen."""
        if self.settings.backend == "ray":
            from albumfix.distributed.ray_cluster import RayBackend

            return RayBackend(self.ctx)
        from albumfix.distributed.local import LocalBackend

        return LocalBackend(self.ctx, self.models)

    @property
    def album(self) -> Path:
        return self.ctx.album

    @property
    def out(self) -> Path:
        return self.ctx.out

    # --- orchestration -----------------------------------------------------------------------
    def run(self, restore: bool = True) -> RunReport:
        started = time.perf_counter()
        with self.ctx.lock(), self.ctx.open_index() as ix:
            files, others, rejected = self._select()
            reports = {f.relpath: PhotoReport(path=f.relpath) for f in files}
            strays = [PhotoReport(path=entry) for entry in rejected]
            for stray in strays:
                self.outcomes.fail(stray, f"--files-from: {rejected[stray.path]}")
            people, error = [], None
            try:
                people = self._stages(ix, files, others, reports, restore)
            except Exception as exc:
                error = run_error(exc, self.ctx.index_path)
            finally:
                self.backend.close()
            report = RunReport(self.album, self.out, [*reports.values(), *strays], people,
                               time.perf_counter() - started, self.settings.dry_run,
                               self.ctx.stop.signal_name, error)
            self._close(report, restore)
        return report

    def _stages(self, ix: AlbumIndex, files: list[AlbumFile], others: list[AlbumFile],
                reports: dict[str, PhotoReport], restore: bool) -> list[dict]:
        """Hash, analyse, plan and (when `restore`) restore `files`; `others` (the album's files a
        --files-from run leaves out) only lend their stored analysis to grouping and exemplars.
        Returns the people report."""
        hashes = self._hash_files(ix, files, reports)
        self._analyse(ix, files, hashes, reports)
        if self.ctx.stop.requested:
            return []
        hashes = {relpath: h for relpath, h in hashes.items() if reports[relpath].status != "failed"}
        photo_files: dict[str, AlbumFile] = {}  # content hash -> a file with it (the first by name)
        for f in files:
            if f.relpath in hashes:
                photo_files.setdefault(hashes[f.relpath], f)
        for digest, f in self._context(ix, others).items():
            photo_files.setdefault(digest, f)
        faces = ix.faces(sorted(photo_files))
        plan = self._plan(ix, faces)
        self._planned = (plan, photo_files)
        for relpath, digest in hashes.items():
            reports[relpath].faces = plan.face_reports(digest)
        if restore:
            looked = self._restore(ix, files, hashes, photo_files, plan, reports)
            if looked and not self.ctx.stop.requested:
                # second looks verified in this run: plan again, redo the photos whose faces changed
                plan = self._plan(ix, faces)
                self._planned = (plan, photo_files)
                again = [f for f in files if f.relpath in looked]
                for f in again:
                    reports[f.relpath].faces = plan.face_reports(hashes[f.relpath])
                self._restore(ix, again, hashes, photo_files, plan, reports, stage="second look")
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
            self.outcomes.publish(photo)
        if restore and not self.settings.dry_run and report.error is None:
            try:
                self._write_pages(report)
            except Exception as exc:
                report.error = run_error(exc, self.ctx.index_path)

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
        progress = self.ctx.progress
        progress.stage("hash", len(files))
        for f in files:
            if self.ctx.stop.requested:
                break
            digest = ix.cached_hash(f.relpath, f.size, f.mtime_ns)
            if digest is None:
                try:
                    digest = content_hash(f.path)
                except OSError as exc:
                    self.outcomes.fail(reports[f.relpath], f"cannot read file: {exc.strerror or exc}")
                    progress.advance()
                    continue
                ix.remember_hash(f.relpath, f.size, f.mtime_ns, digest)
            hashes[f.relpath] = digest
            progress.advance()
        return hashes

    # --- analyse -----------------------------------------------------------------------------
    @cached_property
    def _analysis_key(self) -> str:
        return analysis_key(self.settings)

    def _analyse(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 reports: dict[str, PhotoReport]) -> None:
        """Analyse each content the index has no analysis of under the current key (the first
        file with it, by name) through the backend, storing each group's results in one
        transaction as they come back; files whose content failed are reported failed."""
        key = self._analysis_key
        first_path: dict[str, AlbumFile] = {}
        for f in files:
            if f.relpath in hashes:
                first_path.setdefault(hashes[f.relpath], f)
        todo = [PhotoToAnalyse(h, f.relpath, f.path) for h, f in first_path.items() if ix.analysis_done(h, key) is None]
        errors: dict[str, str] = {}  # digest -> reason, not stored: a later albumfix may succeed
        self.ctx.progress.stage("analyse", len(todo))
        for group in self.backend.analyse(analysis_groups(todo)):
            with ix.transaction():  # one commit per group
                for result in group:
                    if result.status == "error":
                        errors[result.digest] = result.reason
                    else:
                        ix.store_analysis(result.digest, key, result.size, result.status, result.reason, result.rows)
            self.ctx.progress.advance(len(group))
        for relpath, digest in hashes.items():
            status, reason = ("failed", errors[digest]) if digest in errors else ix.analysis_done(digest, key) or ("", "")
            if status == "failed":
                self.outcomes.fail(reports[relpath], reason)

    # --- group + choose ------------------------------------------------------------------------
    def _plan(self, ix: AlbumIndex, faces: list[FaceRow]) -> Plan:
        from albumfix.plan import build_plan

        return build_plan(ix, faces, self.settings, self.ctx.progress, looks=ix.looks(self._look_key))

    @cached_property
    def _look_key(self) -> str:
        """Whose second looks the plan uses: the restorer's (model and weights digest)."""
        return f"{self.models.model_name}:{self.models.weights_digest}"

    # --- restore + compose ---------------------------------------------------------------------
    def _restore(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                 photo_files: dict[str, AlbumFile], plan: Plan, reports: dict[str, PhotoReport],
                 stage: str = "restore") -> set[str]:
        """Write each photo's output, in album order, until a stop is requested: photos with
        faces to restore go to the backend as PhotoTasks (the photos in hand are finished on a
        stop), the others are settled here; each result is recorded as it comes back, and the
        second looks it brings are stored. Returns the photos (relpaths) that brought second
        looks: their reports are published by a later pass (or at the end of the run)."""
        self.ctx.progress.stage(stage, len(files))
        waiting: dict[str, tuple[OutputRow, PhotoReport]] = {}
        looked: set[str] = set()
        tasks = self._restore_tasks(ix, files, hashes, photo_files, plan, reports, waiting)
        for result in self.backend.restore(tasks):
            row, report = waiting.pop(result.relpath)
            if result.status == "failed":
                self.outcomes.fail(report, result.reason)
            else:
                plan.attach_restored(report, result.restored)
                if result.looks:
                    ix.store_looks(self._look_key, result.looks)
                    looked.add(result.relpath)
                self.outcomes.finish(ix, row, report, "restored", result.restored, publish=not result.looks)
            self.ctx.progress.advance()
        return looked

    def _restore_tasks(self, ix: AlbumIndex, files: list[AlbumFile], hashes: dict[str, str],
                       photo_files: dict[str, AlbumFile], plan: Plan, reports: dict[str, PhotoReport],
                       waiting: dict[str, tuple[OutputRow, PhotoReport]]) -> Iterator[PhotoTask]:
        """The PhotoTask of each photo with faces to restore, in album order, its output row
        marked pending and its (row, report) put in `waiting`; every other photo is settled on
        the way (its finished output reused, a foreign file left alone, a dry run, a copy)."""
        owned = ix.outputs_by_target()
        for f in files:
            if self.ctx.stop.requested:
                return
            if f.relpath not in hashes:
                self.ctx.progress.advance()
                continue
            digest, report = hashes[f.relpath], reports[f.relpath]
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
            elif refusal := self._overwrite_refusal(f, target, f.relpath in owned):
                report.status, report.reason, report.output = "skipped", refusal, None
            elif self.settings.dry_run:
                report.status = "restored" if to_restore else "unchanged"
                report.reason = "dry run: nothing written"
            elif to_restore:
                row = OutputRow(f.relpath, f.relpath, out_key, "pending", "", {})
                ix.mark_output(row)
                waiting[f.relpath] = (row, report)
                yield self._photo_task(f, target, plan, photo_files, to_restore)
                continue
            else:
                self._copy(ix, f, target, OutputRow(f.relpath, f.relpath, out_key, "pending", "", {}), report)
            self.outcomes.publish(report)
            self.ctx.progress.advance()

    @staticmethod
    def _photo_task(f: AlbumFile, target: Path, plan: Plan, photo_files: dict[str, AlbumFile],
                    to_restore: list[str]) -> PhotoTask:
        """What the restore stage needs of one photo, as plain data: each face to restore with
        its exemplars (their photos' files, landmarks and embeddings)."""
        def exemplar(choice) -> ExemplarRef:
            row = plan.faces[choice.face_id].row
            return ExemplarRef(choice.face_id, photo_files[row.content_hash].path, row.landmarks, row.embedding,
                               choice.identity_distance)

        faces = []
        for fid in to_restore:
            face = plan.faces[fid]
            row = face.row
            faces.append(FaceTask(fid, row.landmarks, tuple(row.box), row.embedding, row.embedder,
                                  row.quality.get("detail", 0.0), tuple(exemplar(c) for c in face.exemplars),
                                  look=face.wants_look))
        return PhotoTask(f.relpath, f.path, target, tuple(faces))

    def _copy(self, ix: AlbumIndex, f: AlbumFile, target: Path, row: OutputRow, report: PhotoReport) -> None:
        """A photo with nothing to restore: its bytes, unchanged."""
        ix.mark_output(row)
        report.reason = "no face needs restoration" if report.faces else "no face found"
        try:
            atomic_copy(f.path, target)
        except Exception as exc:
            self.outcomes.fail(report, photo_error(exc, "could not copy", self.ctx.index_path))
        else:
            self.outcomes.finish(ix, row, report, "unchanged", {})

    def _output_key(self, digest: str, plan: Plan, to_restore: list[str]) -> str:
        """Hash of everything the output depends on: the photo, the restore settings and
        weights, and for each restored face the exemplars used (a new exemplar means a new
        output)."""
        parts = {
            "photo": digest,
            "faces": [[fid, plan.exemplars_of(fid)] for fid in to_restore],
            "settings": self.settings.key(*RESTORE_FIELDS) if to_restore else "copy",
            "weights": self.models.weights_digest if to_restore else "",
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
