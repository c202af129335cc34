"""The `albumfix` command line (typer). Thin: parse options, call the pipeline, render output.

Every option can also come from an environment variable `ALBUMFIX_<OPTION>` (shown in --help) or
from a TOML config file (`--config`). Logs and progress go to stderr; `--json` writes one JSON
document to stdout (`--jsonl`: one line per photo, then the summary). Exit codes: 0 ok, 1 some
photos failed, 2 usage error, 3 album not found or unreadable, 4 fatal (model, weights or device
unusable, no space left), 5 another run holds the output folder, 130 / 143 stopped by SIGINT /
SIGTERM after the photo in hand.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from albumfix import __version__
from albumfix.errors import EXIT_USAGE, AlbumfixError, UsageError


class _DefaultCommandGroup(TyperGroup):
    """A command group whose first argument falls back to its `list` command:
    `albumfix people ALBUM` == `albumfix people list ALBUM`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="albumfix",
    help="Restore the faces in a photo album, guided by each person's own best photos.\n\n"
         "Start with:  albumfix restore ALBUM   (writes a restored copy to ALBUM-restored/)",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
people_app = typer.Typer(cls=_DefaultCommandGroup, no_args_is_help=True, rich_markup_mode=None,
                         help="List people found in an album and correct the grouping.\n\n"
                              "albumfix people ALBUM lists them; corrections persist across runs.")
models_app = typer.Typer(rich_markup_mode=None,
                         help="List restoration models and weights; import a checkpoint.")
app.add_typer(people_app, name="people")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"albumfix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Restore the faces in a photo album, guided by each person's own best photos."""
app.add_typer(models_app, name="models")

log = logging.getLogger("albumfix")


def _env(name: str) -> str:
    return f"ALBUMFIX_{name.upper()}"


# --- shared options (one definition each, reused by scan and restore) ---------------------------
AlbumArg = Annotated[Path, typer.Argument(help="Album folder (searched recursively).", show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option("--output", "-o", envvar=_env("output"),
                   help="Output folder [default: ALBUM-restored beside the album].")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", envvar=_env("config"),
                      help="TOML file with default settings (same names as the options).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
DryRunOpt = Annotated[Optional[bool], typer.Option("--dry-run", envvar=_env("dry_run"),
                      help="Plan and report; write nothing.", show_default=False)]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log detail (-vv: debug).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")]
FacesOpt = Annotated[Optional[str], typer.Option("--faces", envvar=_env("faces"),
                     help="Face detector+embedder: auto|dlib|insightface [default: auto].")]
LandmarksOpt = Annotated[Optional[str], typer.Option("--landmarks", envvar=_env("landmarks"),
                         help="68-point landmarks: auto|dlib|fan [default: auto].")]
ModelsDirOpt = Annotated[Optional[Path], typer.Option("--models-dir", envvar=_env("models_dir"),
                         help="insightface model root [default: ~/.insightface].")]
UpsampleOpt = Annotated[Optional[int], typer.Option("--upsample", envvar=_env("upsample"),
                        help="dlib HOG upsampling (finds smaller faces, slower) [default: 1].")]
CnnOpt = Annotated[Optional[bool], typer.Option("--cnn-fallback/--no-cnn-fallback", envvar=_env("cnn_fallback"),
                   help="Try dlib's slower CNN detector when HOG finds no face [default: on].",
                   show_default=False)]
MaxMpOpt = Annotated[Optional[float], typer.Option("--max-megapixels", envvar=_env("max_megapixels"),
                     help="Refuse larger images (decompression-bomb guard) [default: 180].")]
RestoreModeOpt = Annotated[Optional[str], typer.Option("--restore", envvar=_env("restore"),
                           help="Which faces: auto (degraded ones) | all | none [default: auto].")]
MinFaceOpt = Annotated[Optional[int], typer.Option("--min-face-size", envvar=_env("min_face_size"),
                       help="Skip faces whose eye-to-eye distance is below this many px [default: 24].")]
ExemplarsOpt = Annotated[Optional[int], typer.Option("--exemplars", envvar=_env("exemplars"),
                         help="Exemplars per degraded face: each guides one restoration and the outputs are fused per facial region (K times the model work); 0 restores without guidance [default: 1].")]
WaitOpt = Annotated[Optional[float], typer.Option("--wait", envvar=_env("wait"), metavar="SECONDS",
                    help="When another albumfix run is using OUTPUT, wait up to this long for it "
                         "instead of exiting with code 5 [default: 0].")]
FilesFromOpt = Annotated[Optional[Path], typer.Option("--files-from", metavar="FILE", allow_dash=True,
                         help="Only these album files: one path per line (NUL-separated with "
                              "--null), '-' reads stdin. Paths absolute, or relative to the current "
                              "folder or to the album.")]
NullOpt = Annotated[bool, typer.Option("--null", help="--files-from entries end with NUL (find -print0).")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="Stream one JSON line per photo as it finishes, "
                                                          "then a summary line (no `photos`).")]


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger("albumfix")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False,
                                               show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("albumfix: %(levelname)s: %(message)s"))
    root.addHandler(handler)


class _RichProgress:
    """Progress bars on stderr; used only when stderr is a terminal."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def stage(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)


def _fail(exc: AlbumfixError) -> None:
    typer.echo(f"albumfix: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _run(restore: bool, options: dict) -> None:
    """Run scan or restore with a command's parameters (the Settings fields plus album,
    config, as_json, as_jsonl, files_from, null, verbose, quiet; `restore_mode` is the `restore`
    setting). SIGINT/SIGTERM stop it after the photo in hand, with the summary printed."""
    from contextlib import nullcontext

    from albumfix.interrupt import stop_on_signals
    from albumfix.pipeline import Pipeline
    from albumfix.settings import load_settings

    album, config, as_json = options.pop("album"), options.pop("config"), options.pop("as_json")
    as_jsonl, files_from, null = options.pop("as_jsonl"), options.pop("files_from"), options.pop("null")
    verbose, quiet = options.pop("verbose"), options.pop("quiet")
    options["restore"] = options.pop("restore_mode")
    _setup_logging(verbose, quiet)
    try:
        if as_json and as_jsonl:
            raise UsageError("--json and --jsonl cannot be combined")
        settings = load_settings(config, options)
        entries = None if files_from is None else _read_file_list(files_from, null)
        on_photo = (lambda photo: _echo_line(photo.to_json())) if as_jsonl else None
        progress = _RichProgress() if sys.stderr.isatty() and not quiet else nullcontext()
        with stop_on_signals() as stop, progress as bar:
            pipeline = Pipeline(album, settings, progress=bar, files_from=entries, stop=stop, on_photo=on_photo)
            report = pipeline.run(restore=restore)
    except AlbumfixError as exc:
        _fail(exc)
    if as_jsonl:
        _echo_line(report.to_json(photos=False))
    elif as_json:
        typer.echo(_json_text(report.to_json(), indent=2))
    else:
        _print_summary(report.to_json(), restore)
    if report.error:
        typer.echo(f"albumfix: error: {report.error}", err=True)
    raise typer.Exit(report.exit_code)


def _json_text(data, indent: int | None = None) -> str:
    """JSON with non-ASCII text as is, except the lone surrogates that stand for file-name bytes
    that are not UTF-8: those become \\udcXX escapes, which json.loads and os.fsencode turn back
    into the very bytes."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _echo_line(data: dict) -> None:
    """One JSON object on one stdout line, flushed at once (a reader follows a long run)."""
    typer.echo(_json_text(data))
    sys.stdout.flush()


def _read_file_list(source: Path, null: bool) -> list[str]:
    """The entries of --files-from FILE ('-': stdin)."""
    from albumfix.album.scan import split_file_list

    try:
        data = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --files-from {source}: {exc.strerror or exc}") from exc
    return split_file_list(data, null=null)


def _print_summary(data: dict, restore: bool) -> None:
    s = data["summary"]
    verb = "processed" if restore else "analysed"
    typer.echo(f"{s['photos']} photos {verb} in {s['seconds']:.1f} s: {s['restored']} restored, "
               f"{s['unchanged']} unchanged, {s['skipped']} skipped, {s['failed']} failed; "
               f"{s['faces']} faces, {s['people']} people.")
    if s["pending"]:
        why = f"stopped by {data['interrupted']}" if data["interrupted"] else "stopped by a fatal error"
        typer.echo(f"  {why}: {s['pending']} photos left for the next run")
    for p in data["photos"]:
        if p["status"] in ("failed", "skipped"):
            typer.echo(f"  {p['status']}: {p['path']}: {p['reason']}")
    if restore and not data["dry_run"]:
        typer.echo(f"Output: {data['output']}  (open {Path(data['output']) / 'report.html'})")


@app.command()
def restore(
    album: AlbumArg,
    output: OutOpt = None,
    overwrite: Annotated[Optional[str], typer.Option(
        "--overwrite", envvar=_env("overwrite"),
        help="Existing files in OUTPUT that albumfix did not write: never|always|if-newer "
             "(if the photo is newer) [default: never]. Files albumfix wrote are always updated.")] = None,
    dry_run: DryRunOpt = None,
    faces: FacesOpt = None,
    landmarks: LandmarksOpt = None,
    models_dir: ModelsDirOpt = None,
    upsample: UpsampleOpt = None,
    cnn_fallback: CnnOpt = None,
    max_megapixels: MaxMpOpt = None,
    restore_mode: RestoreModeOpt = None,
    min_face_size: MinFaceOpt = None,
    exemplars: ExemplarsOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", envvar=_env("model"),
                     help="Model configuration (see `albumfix models`) [default: albumfix-s128].")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", envvar=_env("weights"),
                       help="Checkpoint file [default: the registered weights of --model].")] = None,
    device: Annotated[Optional[str], typer.Option("--device", envvar=_env("device"),
                      help="auto|cpu|cuda|cuda:N|mps [default: auto].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", envvar=_env("batch_size"),
                          help="Faces per model call; halved on GPU out-of-memory [default: 8].")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", envvar=_env("precision"),
                         help="auto (bf16/fp16 on GPU) | fp32 [default: auto].")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", envvar=_env("strength"),
                        help="0 keeps the original face, 1 the restored one [default: 1].")] = None,
    guard: Annotated[Optional[bool], typer.Option("--guard/--no-guard", envvar=_env("guard"),
                     help="Check each restored face: lower the strength, or keep the original, where restoring "
                          "moves it away from its person or makes it less sharp [default: on].", show_default=False)] = None,
    save_faces: Annotated[Optional[bool], typer.Option("--save-faces", envvar=_env("save_faces"),
                          help="Also write LQ | exemplar | restored strips to OUTPUT/.albumfix/faces/.",
                          show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", envvar=_env("threads"),
                       help="torch CPU threads (outputs are byte-identical for one count) "
                            "[default: 0, one per CPU albumfix may use].")] = None,
    wait: WaitOpt = None,
    files_from: FilesFromOpt = None,
    null: NullOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Restore the faces of every photo in ALBUM into a copy under OUTPUT.

    Originals are never modified. A re-run only redoes what changed; a killed run resumes.
    Photos without a face to restore are copied byte-for-byte. Writes OUTPUT/report.html.
    """
    _run(True, dict(locals()))


@app.command()
def scan(
    album: AlbumArg,
    output: OutOpt = None,
    dry_run: DryRunOpt = None,
    faces: FacesOpt = None,
    landmarks: LandmarksOpt = None,
    models_dir: ModelsDirOpt = None,
    upsample: UpsampleOpt = None,
    cnn_fallback: CnnOpt = None,
    max_megapixels: MaxMpOpt = None,
    restore_mode: RestoreModeOpt = None,
    min_face_size: MinFaceOpt = None,
    exemplars: ExemplarsOpt = None,
    wait: WaitOpt = None,
    files_from: FilesFromOpt = None,
    null: NullOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Find faces, group them into people and choose exemplars; restore nothing.

    Results are kept in OUTPUT/.albumfix/index.sqlite, so a later `restore` reuses them.
    """
    _run(False, dict(locals()))


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Show the device, face backends, weights found and library versions."""
    from albumfix.doctor import collect, render

    facts = collect()
    typer.echo(json.dumps(facts, indent=2) if as_json else render(facts))


# --- people -------------------------------------------------------------------------------------
def _people_out(album: Path, output: Path | None) -> Path:
    """OUT of an album whose index exists (else exit 2 or 3 with the reason)."""
    from albumfix.pipeline import index_path, resolve_paths
    from albumfix.settings import Settings

    try:
        _, out = resolve_paths(album, Settings(output=output))
    except AlbumfixError as exc:
        _fail(exc)
    if not index_path(out).exists():
        _fail(UsageError(f"no index at {index_path(out)}: run `albumfix scan {album}` first"))
    return out


def _people_index(out: Path):
    from albumfix.album.index import AlbumIndex
    from albumfix.pipeline import index_path

    return AlbumIndex(index_path(out))


def _people_call(album: Path, output: Path | None, wait: float | None, action) -> None:
    """Run an edit of the grouping under OUT's lock (the one runs take: exit 5 while one works)."""
    from albumfix.album.lock import output_lock
    from albumfix.people.edit import PeopleEditError

    out = _people_out(album, output)
    try:
        with output_lock(out, wait or 0.0), _people_index(out) as ix:
            message = action(ix)
    except PeopleEditError as exc:
        _fail(UsageError(str(exc)))
    except AlbumfixError as exc:
        _fail(exc)
    typer.echo(message)


@people_app.command("list")
def people_list(album: AlbumArg, output: OutOpt = None, as_json: JsonOpt = False) -> None:
    """List the people of ALBUM (from the last scan or restore) with their faces."""
    from albumfix.people.edit import list_people

    with _people_index(_people_out(album, output)) as ix:
        people = list_people(ix)
    if as_json:
        typer.echo(_json_text(people, indent=2))
        return
    for p in people:
        faces = ", ".join(f"{face} ({photo or '?'})" for face, photo in zip(p["faces"], p["photos"]))
        count = f"{len(p['faces'])} face{'s' if len(p['faces']) != 1 else ''}"
        typer.echo(f"{p['id']}  {p['name'] or '-'}  {count}: {faces}")


@people_app.command("name")
def people_name(album: AlbumArg, person: str, name: str, output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Give PERSON a NAME (shown in reports)."""
    from albumfix.people.edit import name_person

    _people_call(album, output, wait, lambda ix: name_person(ix, person, name))


@people_app.command("merge")
def people_merge(album: AlbumArg, people: Annotated[list[str], typer.Argument(help="Two or more person ids; the first one keeps its id.")],
                 output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Merge people into the first one given."""
    from albumfix.people.edit import merge_people

    _people_call(album, output, wait, lambda ix: merge_people(ix, people))


@people_app.command("split")
def people_split(album: AlbumArg, person: str,
                 faces: Annotated[list[str], typer.Argument(help="Face ids to move to a new person.")],
                 output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Move FACES out of PERSON into a new person (they will never be grouped back)."""
    from albumfix.people.edit import split_person

    _people_call(album, output, wait, lambda ix: split_person(ix, person, faces))


@people_app.command("exclude")
def people_exclude(album: AlbumArg, faces: Annotated[list[str], typer.Argument(help="Face ids.")],
                   output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Exclude faces (false detections, strangers): never grouped, never exemplars."""
    from albumfix.people.edit import exclude_faces

    _people_call(album, output, wait, lambda ix: exclude_faces(ix, faces))


# --- models -------------------------------------------------------------------------------------
@models_app.callback(invoke_without_command=True)
def models_root(ctx: typer.Context) -> None:
    """`albumfix models` alone lists them."""
    if ctx.invoked_subcommand is None:
        models_list(as_json=False)


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """List model configurations and the weights found for them, with SHA-256 checksums."""
    from albumfix.restore import list_configs
    from albumfix.restore.weights import list_weights

    weights = list_weights()
    rows = [{"config": name, "weights": [{"path": str(w.path), "sha256": w.sha256, "source": w.source,
                                          "bytes": w.size} for w in weights if w.config == name]}
            for name in list_configs()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(row["config"])
        for w in row["weights"] or [{"path": "(no weights found)", "sha256": "", "source": ""}]:
            typer.echo(f"    {w['source']:8} {w['sha256'][:16]}  {w['path']}")


@models_app.command("import")
def models_import(path: Annotated[Path, typer.Argument(help="Checkpoint (.safetensors or .pth, e.g. ASFFNet512.pth).")]) -> None:
    """Validate a checkpoint against its configuration and register it for use."""
    from albumfix.restore.weights import WeightsError, import_weights

    try:
        info = import_weights(path)
    except WeightsError as exc:
        typer.echo(f"albumfix: error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE)
    typer.echo(f"imported {path} as {info.config}: {info.path} (sha256 {info.sha256})")


# --- training -----------------------------------------------------------------------------------
@app.command()
def dataset(
    roots: Annotated[list[Path], typer.Argument(help="Identity folders laid out ROOT/<person>/*.jpg.")],
    out: Annotated[Path, typer.Option("--out", help="Training cache to write (.npz).")],
    size: Annotated[int, typer.Option("--size", help="Crop side in px (the model's size).")] = 128,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of people held out.")] = 0.1,
    work_dir: Annotated[Optional[Path], typer.Option("--work-dir", help="Folder of the resumable analysis log.")] = None,
    min_gt_ratio: Annotated[float, typer.Option("--min-gt-ratio", help="A face is ground truth when its source square is at least this times the crop side.")] = 1.0,
    min_ref_ratio: Annotated[float, typer.Option("--min-ref-ratio", help="The same ratio for exemplar candidates.")] = 0.75,
    quality: Annotated[int, typer.Option("--quality", min=50, max=100, help="JPEG quality of the cached crops (90 keeps a GPU carry small).")] = 95,
) -> None:
    """Build a training cache: albumfix's own analysis, alignment and exemplar choice on your
    photos grouped by person. Resumable; validation people are held out whole."""
    from albumfix.train.dataset import build_dataset

    from dataclasses import asdict

    report = build_dataset(roots, out, size=size, val_fraction=val_fraction, min_gt_ratio=min_gt_ratio,
                           min_ref_ratio=min_ref_ratio, quality=quality, work_dir=work_dir)
    for key, value in asdict(report).items():
        typer.echo(f"{key:<12} {value}")


@app.command()
def pairs(
    cache: Annotated[Path, typer.Option("--cache", help="Training cache (from `albumfix dataset`).")] = Path("cache/train-s128.npz"),
    out: Annotated[Path, typer.Option("--out", help="Pairs file to write (.npz).")] = Path("cache/pairs-s128.npz"),
    work_dir: Annotated[Optional[Path], typer.Option("--work-dir", help="The cache's work folder (its analysis log; the resumable shards go there) [default: the cache's folder].")] = None,
    variants: Annotated[int, typer.Option("--variants", min=1, help="Damages per ground-truth crop.")] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Processes.")] = 2,
    crops: Annotated[Optional[int], typer.Option("--crops", min=1, help="Only the first N ground-truth crops (reuses the shards of a longer build cut short).")] = None,
) -> None:
    """Make training pairs the way inference sees them: damage whole photos, find and align the
    face on the damaged photo, crop the truth with the same transform (albumfix.train.inference_pairs).
    `albumfix train pairs=FILE` trains on them, `albumfix eval --pairs FILE` scores them. Resumable."""
    from dataclasses import asdict

    from albumfix.train.inference_pairs import build_inference_pairs

    report = build_inference_pairs(cache, out, variants=variants, seed=seed, workers=jobs, work_dir=work_dir, crops=crops)
    for key, value in asdict(report).items():
        typer.echo(f"{key:<22} {value}")


@app.command()
def train(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides, e.g. steps=500 loss.fft=0.1.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML/JSON training recipe.")] = None,
) -> None:
    """Train (or resume) restoration weights from a training cache; running the same command
    again resumes from the last checkpoint. The shipped recipe: tools/albumfix-s128.toml."""
    from dataclasses import asdict

    from albumfix.train.trainer import load_train_config, train as run_training

    _setup_logging(0, False)
    result = run_training(load_train_config(config, overrides or []))
    typer.echo(json.dumps(asdict(result), indent=2, default=str))


@app.command("train-identity")
def train_identity(
    roots: Annotated[list[Path], typer.Argument(help="Identity folders laid out ROOT/<person>/*.jpg.")],
    out: Annotated[Path, typer.Option("--out", help="Identity weights to write (.safetensors); copy them into the models folder (see models list) to use them.")] = Path("runs/identity/albumfix-id-robust.safetensors"),
    set_path: Annotated[Path, typer.Option("--set", help="Chip set to build or reuse (.npz).")] = Path("cache/identity-set.npz"),
    variants: Annotated[int, typer.Option("--variants", min=1, help="Damaged copies per photo in a new set.")] = 3,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="[default: the recipe's]")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="[default: the recipe's]")] = None,
    tuned_stages: Annotated[Optional[int], typer.Option("--tuned-stages", min=0, max=5, help="Residual stages that learn, with the stem; the later ones stay dlib's [default: the recipe's].")] = None,
    contrast_weight: Annotated[Optional[float], typer.Option("--contrast-weight", help="Weight of the gallery ranking term [default: the recipe's].")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Processes building the set.")] = 2,
) -> None:
    """Fine-tune dlib's identity network so damaged faces embed where their sharp photos do
    (albumfix.train.identity). scan uses the result for degraded faces once it is in the models
    folder as albumfix-id-robust.safetensors, in place of the shipped one."""
    from albumfix.train.identity import IdentityTraining, build_identity_set, train_robust_embedder

    data = build_identity_set(roots, set_path, variants=variants, jobs=jobs, say=typer.echo)
    chosen = {"steps": steps, "lr": lr, "tuned_stages": tuned_stages,
              "contrast_weight": contrast_weight}
    cfg = IdentityTraining(**{k: v for k, v in chosen.items() if v is not None})
    record = train_robust_embedder(data, out, cfg, say=typer.echo)
    typer.echo(json.dumps({k: record[k] for k in ("steps", "best_step", "seconds", "before", "best")}, indent=2))


@app.command("eval")
def evaluate_command(
    cache: Annotated[Path, typer.Option("--cache", help="Training cache with held-out people.")] = Path("cache/train-s128.npz"),
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights [default: the registered weights of --model].")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A training checkpoint (its EMA weights).")] = None,
    model: Annotated[str, typer.Option("--model")] = "albumfix-s128",
    split: Annotated[str, typer.Option("--split", help="val (held-out people) | train.")] = "val",
    limit: Annotated[Optional[int], typer.Option("--limit", help="First N faces only.")] = None,
    degradation: Annotated[str, typer.Option("--degradation", help="mild | light | default | heavy.")] = "default",
    seed: Annotated[int, typer.Option("--seed")] = 1234,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="Score crops made the way restore makes them, from this pairs file (`albumfix pairs`), instead of crop-level damage.")] = None,
    identity: Annotated[bool, typer.Option("--identity/--no-identity", help="dlib identity distances.")] = True,
    device: Annotated[str, typer.Option("--device")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Faces per model call.")] = 16,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.")] = None,
    examples: Annotated[Optional[Path], typer.Option("--examples", help="PNG sheet: input | unguided | guided | exemplar | truth.")] = None,
    albums: Annotated[Optional[Path], typer.Option("--albums", help="End-to-end album benchmark in this folder (built on first use): whole photos of held-out people through `albumfix restore`.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="With --albums: identity folders ROOT/<person>/*.jpg [default: ../shared/data/faces/celeba and lfw].")] = None,
    people: Annotated[Optional[int], typer.Option("--people", min=1, help="With --albums: at most this many held-out people [default: all].")] = None,
    code: Annotated[Optional[Path], typer.Option("--code", help="With --albums: run the albumfix of this checkout (before/after comparisons).")] = None,
    families: Annotated[Optional[list[str]], typer.Option("--family", help="With --albums, for a new album: its damage families, in turn [default: training, aged-print, web-thumbnail; also: phone-snap].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """PSNR, SSIM and identity distance on held-out people for the degraded input, the model
    without guidance and the model with albumfix's chosen exemplar. With --albums: the same
    questions end to end, on whole damaged photos through the real `albumfix restore`."""
    from albumfix.restore.weights import find_weights
    from albumfix.train.evaluate import EvalConfig, evaluate

    if albums is not None:
        from albumfix.train.albums import build_albums, report_table, run_benchmark

        roots = data or [Path("../shared/data/faces/celeba"), Path("../shared/data/faces/lfw")]
        from albumfix.degrade import DAMAGE_FAMILIES, PHOTO_FAMILIES

        unknown = sorted(set(families or ()) - set(DAMAGE_FAMILIES))
        if unknown:
            _fail(UsageError(f"unknown damage family {unknown[0]!r}; choose from {', '.join(DAMAGE_FAMILIES)}"))
        build_albums(roots, albums, people=people, families=families or PHOTO_FAMILIES)
        result = run_benchmark(albums, code=code.resolve() if code else None)
        typer.echo(json.dumps(result, indent=2) if as_json else report_table(result))
        return

    if weights is None and checkpoint is None:
        weights = find_weights(model)
        if weights is None:
            _fail(UsageError(f"no weights for {model}: give --weights or --checkpoint"))
    report = evaluate(EvalConfig(
        cache=str(cache), split=split, limit=limit, weights=str(weights or ""),
        checkpoint=str(checkpoint or ""), model=model, degradation=degradation, seed=seed, pairs=str(pairs or ""),
        identity=identity, batch_size=batch_size, device=device, threads=threads, out=str(out or ""),
        examples=str(examples or "")))
    typer.echo(report.to_json() if as_json else report.table())


def main() -> None:
    """Console-script entry point."""
    # Measured on 2 cores: OpenMP's default busy-waiting made a face 3x slower when anything
    # else runs beside albumfix; passive waiting costs nothing when the machine is idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
