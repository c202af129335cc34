"""The `albumfix` command line (typer). Thin: parse options, call the pipeline, render output.

The options of scan and restore are built from the fields of `Settings` (albumfix/cli_options.py),
the one place of their defaults and help. Each can also come from an environment variable
`ALBUMFIX_<OPTION>` (shown in --help) or from a TOML config file (`--config`). Logs and progress
go to stderr; `--json` writes one JSON document to stdout (`--jsonl`: one line per photo, then the
summary). Exit codes: 0 ok, 1 some photos failed, 2 usage error, 3 album not found or unreadable,
4 fatal (model, weights or device unusable, no space left), 5 another run holds the output folder,
130 / 143 stopped by SIGINT / SIGTERM after the photo in hand. Developer commands (training and
evaluation) have their own --help panel.
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
from albumfix.cli_options import (ALBUMS_PANEL, CROPS_PANEL, DEVELOPER_PANEL, AlbumArg, JsonOpt,
                                  OldConfigOpt, OutOpt, PanelCommand, PanelGroup, RecipeOpt, WaitOpt,
                                  check_eval_mode, like_setting, merge_flags, recipe_path,
                                  split_overrides, with_run_options)
from albumfix.errors import EXIT_USAGE, AlbumfixError, UsageError
from albumfix.settings import Settings


class _DefaultCommandGroup(TyperGroup):
    """A command group whose first argument falls back to its `list` command:
    `albumfix people ALBUM` == `albumfix people list ALBUM`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="albumfix",
    cls=PanelGroup,
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


def _run(restore: bool, album: Path, options: dict) -> None:
    """Run scan or restore on ALBUM with a command's options (the Settings fields it takes plus
    cli_options.RUN_OPTIONS). SIGINT/SIGTERM stop it after the photo in hand, with the summary
    printed. stdout carries albumfix's own output only: whatever a library prints there while
    the run works (Ray prints its workers' errors to stdout) goes to stderr."""
    from contextlib import nullcontext, redirect_stdout

    from albumfix.interrupt import stop_on_signals
    from albumfix.pipeline import Pipeline
    from albumfix.settings import load_settings

    config, as_json, as_jsonl = options.pop("config"), options.pop("as_json"), options.pop("as_jsonl")
    files_from, null = options.pop("files_from"), options.pop("null")
    verbose, quiet = options.pop("verbose"), options.pop("quiet")
    _setup_logging(verbose, quiet)
    try:
        if as_json and as_jsonl:
            raise UsageError("--json and --jsonl cannot be combined")
        settings = load_settings(config, options)
        entries = None if files_from is None else _read_file_list(files_from, null)
        stdout = sys.stdout
        on_photo = (lambda photo: _echo_line(photo.to_json(), stdout)) if as_jsonl else None
        progress = _RichProgress() if sys.stderr.isatty() and not quiet else nullcontext()
        with stop_on_signals() as stop, progress as bar, redirect_stdout(sys.stderr):
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


def _echo_line(data: dict, stdout=None) -> None:
    """One JSON object on one line of `stdout` (None: sys.stdout), flushed at once (a reader
    follows a long run)."""
    stdout = stdout or sys.stdout
    typer.echo(_json_text(data), file=stdout)
    stdout.flush()


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
@with_run_options("restore")
def restore(album: AlbumArg, **options) -> None:
    """Restore the faces of every photo in ALBUM into a copy under OUTPUT.

    Originals are never modified. A re-run only redoes what changed; a killed run resumes.
    Photos without a face to restore are copied byte-for-byte. Writes OUTPUT/report.html.
    """
    _run(True, album, options)


@app.command()
@with_run_options("scan")
def scan(album: AlbumArg, **options) -> None:
    """Find faces, group them into people and choose exemplars; restore nothing.

    Results are kept in OUTPUT/.albumfix/index.sqlite, so a later `restore` reuses them.
    """
    _run(False, album, options)


@app.command()
def review(album: AlbumArg, output: OutOpt = None, as_json: JsonOpt = False) -> None:
    """List the damaged faces the last restore left unguided, why, and the people they may be,
    each with the command that confirms it.

    The same review, with pictures, is OUTPUT/review.html (written by every restore); the
    confirmations, commented out, are in OUTPUT/review-decisions.txt for `people apply`.
    """
    from albumfix.review import DECISIONS, PAGE, cause_words, read_review

    out = _people_out(album, output)
    found = read_review(out)
    if found is None:
        _fail(UsageError(f"no review in {out}: run `albumfix restore {album}` first"))
    if as_json:
        typer.echo(_json_text(found.to_json(), indent=2))
        return
    typer.echo(f"{len(found.unguided)} damaged faces left unguided, {len(found.guided)} guided "
               f"(pictures: {out / PAGE})")
    for u in found.unguided:
        typer.echo(f"\n{u.photo}  {u.face}: {cause_words(u.cause)}")
        for c in u.candidates:
            who = f"{c.name} ({c.person})" if c.name else c.person
            typer.echo(f"    {c.distance:.3f}  {who}, their photo {c.photo or '?'}:\n      {c.command}")
    typer.echo(f"\nOr uncomment lines of {out / DECISIONS} and apply them in one go:\n    {found.apply}")


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Show the device, face backends, weights found and library versions."""
    from albumfix.doctor import collect, render

    facts = collect()
    typer.echo(json.dumps(facts, indent=2) if as_json else render(facts))


# --- people -------------------------------------------------------------------------------------
def _people_out(album: Path, output: Path | None) -> Path:
    """OUT of an album whose index exists (else exit 2 or 3 with the reason)."""
    from albumfix.stages.context import index_path, resolve_paths

    try:
        _, out = resolve_paths(album, Settings(output=output))
    except AlbumfixError as exc:
        _fail(exc)
    if not index_path(out).exists():
        _fail(UsageError(f"no index at {index_path(out)}: run `albumfix scan {album}` first"))
    return out


def _people_index(out: Path):
    from albumfix.album.index import AlbumIndex
    from albumfix.stages.context import index_path

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


@people_app.command("confirm")
def people_confirm(album: AlbumArg, face: Annotated[str, typer.Argument(help="Face id (as `albumfix review` lists it).")],
                   person: Annotated[str, typer.Argument(help="Person id the face is.")],
                   output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Confirm that FACE is PERSON: the next restore guides it by PERSON's best-matching clearly
    better photo, redoing only its photo."""
    from albumfix.people.edit import confirm_faces

    _people_call(album, output, wait, lambda ix: confirm_faces(ix, [(face, person)]))


@people_app.command("apply")
def people_apply(album: AlbumArg,
                 decisions: Annotated[Path, typer.Argument(help="Decisions file: `confirm FACE PERSON` lines, `#` comments (OUTPUT/review-decisions.txt, written by restore).")],
                 output: OutOpt = None, wait: WaitOpt = None) -> None:
    """Apply every `confirm FACE PERSON` line of a decisions file at once (all or none)."""
    from albumfix.people.edit import confirm_faces, parse_decisions

    try:
        text = decisions.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(UsageError(f"cannot read {decisions}: {getattr(exc, 'strerror', None) or exc}"))

    def apply(ix) -> str:
        pairs = parse_decisions(text)
        return confirm_faces(ix, pairs) if pairs else f"no `confirm` line in {decisions}: nothing changed"

    _people_call(album, output, wait, apply)


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
@app.command(rich_help_panel=DEVELOPER_PANEL)
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


@app.command(rich_help_panel=DEVELOPER_PANEL)
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


@app.command(rich_help_panel=DEVELOPER_PANEL)
def train(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE overrides of the recipe, e.g. steps=500 loss.fft=0.1.")] = None,
    recipe: RecipeOpt = None,
    config: OldConfigOpt = None,
) -> None:
    """Train (or resume) restoration weights from a training cache; running the same command
    again resumes from the last checkpoint. The shipped recipe: tools/albumfix-s128.toml."""
    from dataclasses import asdict

    try:
        path = recipe_path(recipe, config)
    except UsageError as exc:
        _fail(exc)
    from albumfix.train.trainer import load_train_config, train as run_training

    try:
        train_config = load_train_config(path, overrides or [])
    except (OSError, ValueError) as exc:
        _fail(UsageError(str(exc)))
    _setup_logging(0, False)
    result = run_training(train_config)
    typer.echo(json.dumps(asdict(result), indent=2, default=str))


@app.command("train-identity", rich_help_panel=DEVELOPER_PANEL)
def train_identity(
    args: Annotated[list[str], typer.Argument(metavar="ROOT|KEY=VALUE", show_default=False, help="Identity folders laid out ROOT/<person>/*.jpg, and KEY=VALUE overrides of the recipe (IdentityTraining in albumfix/train/identity.py), e.g. steps=800 batch=32.")],
    out: Annotated[Path, typer.Option("--out", help="Identity weights to write (.safetensors); copy them into the models folder (see models list) to use them.")] = Path("runs/identity/albumfix-id-robust.safetensors"),
    set_path: Annotated[Path, typer.Option("--set", help="Chip set to build or reuse (.npz).")] = Path("cache/identity-set.npz"),
    variants: Annotated[int, typer.Option("--variants", min=1, help="Damaged copies per photo in a new set.")] = 3,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="The same as steps=N [default: the recipe's].")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="The same as lr=X [default: the recipe's].")] = None,
    tuned_stages: Annotated[Optional[int], typer.Option("--tuned-stages", min=0, max=5, help="Residual stages that learn, with the stem; the later ones stay dlib's; the same as tuned_stages=S [default: the recipe's].")] = None,
    contrast_weight: Annotated[Optional[float], typer.Option("--contrast-weight", help="Weight of the gallery ranking term; the same as contrast_weight=W [default: the recipe's].")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Processes building the set.")] = 2,
) -> None:
    """Fine-tune dlib's identity network so damaged faces embed where their sharp photos do
    (albumfix.train.identity). scan uses the result for degraded faces once it is in the models
    folder as albumfix-id-robust.safetensors, in place of the shipped one."""
    from albumfix.train.identity import IdentityTraining, build_identity_set, train_robust_embedder

    try:
        roots, overrides = split_overrides(args, IdentityTraining)
        if not roots:
            raise UsageError("give at least one identity folder ROOT")
        chosen = merge_flags(overrides, {"steps": steps, "lr": lr, "tuned_stages": tuned_stages,
                                         "contrast_weight": contrast_weight})
    except UsageError as exc:
        _fail(exc)
    cfg = IdentityTraining(**chosen)
    data = build_identity_set(roots, set_path, variants=variants, jobs=jobs, say=typer.echo)
    record = train_robust_embedder(data, out, cfg, say=typer.echo)
    typer.echo(json.dumps({k: record[k] for k in ("steps", "best_step", "seconds", "before", "best")}, indent=2))


@app.command("eval", cls=PanelCommand, rich_help_panel=DEVELOPER_PANEL)
def evaluate_command(
    ctx: typer.Context,
    albums: Annotated[Optional[Path], typer.Option("--albums", help="Run the end-to-end album benchmark in this folder (built on first use): whole photos of held-out people through `albumfix restore`. Without it: the crop evaluation.")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Training cache with held-out people.", rich_help_panel=CROPS_PANEL)] = Path("cache/train-s128.npz"),
    weights: like_setting("weights", None, rich_help_panel=CROPS_PANEL) = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A training checkpoint (its EMA weights).", rich_help_panel=CROPS_PANEL)] = None,
    model: like_setting("model", Settings.model, rich_help_panel=CROPS_PANEL) = Settings.model,
    split: Annotated[str, typer.Option("--split", help="val (held-out people) | train.", rich_help_panel=CROPS_PANEL)] = "val",
    limit: Annotated[Optional[int], typer.Option("--limit", help="First N faces only.", rich_help_panel=CROPS_PANEL)] = None,
    degradation: Annotated[str, typer.Option("--degradation", help="mild | light | default | heavy.", rich_help_panel=CROPS_PANEL)] = "default",
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=CROPS_PANEL)] = 1234,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="Score crops made the way restore makes them, from this pairs file (`albumfix pairs`), instead of crop-level damage.", rich_help_panel=CROPS_PANEL)] = None,
    identity: Annotated[bool, typer.Option("--identity/--no-identity", help="dlib identity distances.", rich_help_panel=CROPS_PANEL)] = True,
    device: like_setting("device", Settings.device, rich_help_panel=CROPS_PANEL) = Settings.device,
    threads: like_setting("threads", 2, "eval's numbers stay comparable with earlier reports", min=0, rich_help_panel=CROPS_PANEL) = 2,
    batch_size: like_setting("batch_size", 16, "eval's numbers stay comparable with earlier reports", min=1, rich_help_panel=CROPS_PANEL) = 16,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.", rich_help_panel=CROPS_PANEL)] = None,
    examples: Annotated[Optional[Path], typer.Option("--examples", help="PNG sheet: input | unguided | guided | exemplar | truth.", rich_help_panel=CROPS_PANEL)] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Identity folders ROOT/<person>/*.jpg [default: ../shared/data/faces/celeba and lfw].", rich_help_panel=ALBUMS_PANEL)] = None,
    people: Annotated[Optional[int], typer.Option("--people", min=1, help="At most this many held-out people [default: all].", rich_help_panel=ALBUMS_PANEL)] = None,
    code: Annotated[Optional[Path], typer.Option("--code", help="Run the albumfix of this checkout (before/after comparisons).", rich_help_panel=ALBUMS_PANEL)] = None,
    families: Annotated[Optional[list[str]], typer.Option("--family", help="For a new album: its damage families, in turn [default: training, aged-print, web-thumbnail; also: phone-snap].", rich_help_panel=ALBUMS_PANEL)] = None,
    variants: Annotated[Optional[list[str]], typer.Option("--variant", help="Restore variants to run, in turn [default: product, unguided, oracle, product-k3; also: unguarded, unguided-unguarded, oracle-unguarded].", rich_help_panel=ALBUMS_PANEL)] = None,
    as_json: JsonOpt = False,
) -> None:
    """PSNR, SSIM and identity distance on held-out people for the degraded input, the model
    without guidance and the model with albumfix's chosen exemplar. With --albums: the same
    questions end to end, on whole damaged photos through the real `albumfix restore`. Each
    mode refuses the other's options."""
    try:
        check_eval_mode(ctx, albums is not None)
    except UsageError as exc:
        _fail(exc)
    if albums is not None:
        from albumfix.degrade import DAMAGE_FAMILIES, PHOTO_FAMILIES
        from albumfix.train.albums import VARIANT_ARGS, VARIANTS, build_albums, report_table, run_benchmark

        roots = data or [Path("../shared/data/faces/celeba"), Path("../shared/data/faces/lfw")]
        for given, known, what in ((families, DAMAGE_FAMILIES, "damage family"), (variants, VARIANT_ARGS, "variant")):
            unknown = sorted(set(given or ()) - set(known))
            if unknown:
                _fail(UsageError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}"))
        build_albums(roots, albums, people=people, families=families or PHOTO_FAMILIES)
        result = run_benchmark(albums, variants=variants or VARIANTS, code=code.resolve() if code else None)
        typer.echo(json.dumps(result, indent=2) if as_json else report_table(result))
        return

    from albumfix.stages.models import cpu_threads
    from albumfix.restore.weights import find_weights
    from albumfix.train.evaluate import EvalConfig, evaluate

    if weights is None and checkpoint is None:
        weights = find_weights(model)
        if weights is None:
            _fail(UsageError(f"no weights for {model}: give --weights or --checkpoint"))
    report = evaluate(EvalConfig(
        cache=str(cache), split=split, limit=limit, weights=str(weights or ""),
        checkpoint=str(checkpoint or ""), model=model, degradation=degradation, seed=seed, pairs=str(pairs or ""),
        identity=identity, batch_size=batch_size, device=device, threads=cpu_threads(threads), out=str(out or ""),
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
