"""The command-line options, declared once (cli.py uses them).

The options of `scan` and `restore` are the fields of `Settings`: each field's default and metadata
(help, which commands, short name, metavar) make one option `--name-with-dashes` with the
environment variable ALBUMFIX_<NAME>. Its value is None when not given, so that the config file and
then the field's default apply (precedence: albumfix/settings.py). `with_run_options` gives a
command those options and the other ones the two commands share (RUN_OPTIONS); `like_setting`
declares another command's option that means what a setting means. Also here: the help panels
(developer commands apart; `eval`'s options by mode) and `eval`'s mode check. Imports nothing heavy:
--help stays fast.
"""
from __future__ import annotations

import inspect
import re
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from albumfix.errors import UsageError
from albumfix.settings import Settings

DEVELOPER_PANEL = "Developer commands"
CROPS_PANEL = "Crop evaluation (without --albums)"
ALBUMS_PANEL = "Album benchmark (with --albums)"

F = TypeVar("F", bound=Callable[..., Any])
_FIELDS = {f.name: f for f in fields(Settings)}
_HINTS = typing.get_type_hints(Settings)


def env_name(name: str) -> str:
    """The environment variable of option `name`: ALBUMFIX_<NAME>."""
    return f"ALBUMFIX_{name.upper()}"


def settings_fields(command: str) -> list[Field]:
    """The Settings fields that are options of `command` ("scan" or "restore"), in field order."""
    return [f for f in fields(Settings) if command in f.metadata.get("commands", ())]


def flag_name(name: str) -> str:
    """`--name-with-dashes` of Settings field `name`."""
    return "--" + name.replace("_", "-")


def shown_default(f: Field) -> str | None:
    """Field `f`'s default as --help shows it; None for an off flag (nothing to show)."""
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    if isinstance(f.default, bool):
        return "on" if f.default else None
    if isinstance(f.default, float):
        return f"{f.default:g}"
    return str(f.default)


def _with_default(help: str, shown: str | None) -> str:
    return f"{help.rstrip('.')} [default: {shown}]." if shown is not None else help


def _value_type(name: str) -> type:
    """The field's type without None (`Path | None` -> Path)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def settings_option(name: str) -> Any:
    """`Annotated[Optional[T], typer.Option(...)]` of Settings field `name` (None when not given)."""
    f = _FIELDS[name]
    flag = flag_name(name)
    decls = [f"{flag}/--no-{flag[2:]}" if f.default is True else flag]
    if f.metadata.get("short"):
        decls.append(f.metadata["short"])
    return Annotated[Optional[_value_type(name)], typer.Option(
        *decls, envvar=env_name(name), metavar=f.metadata.get("metavar"), show_default=False,
        help=_with_default(f.metadata["help"], shown_default(f)))]


def like_setting(name: str, default: Any, why: str = "", **option: Any) -> Any:
    """`Annotated[T, typer.Option(...)]` of another command for what Settings field `name` means:
    the same flag and help, no environment variable, this command's `default`; `why` says why it
    differs from the setting's. `option`: more typer.Option arguments (min, rich_help_panel)."""
    f = _FIELDS[name]
    shown = shown_default(f) if default is None else str(default)
    if default is not None and default != f.default:
        shown = f"{shown}, not restore's {shown_default(f)}: {why}" if why else shown
    kind = _value_type(name)
    return Annotated[Optional[kind] if default is None else kind, typer.Option(
        flag_name(name), show_default=False, help=_with_default(f.metadata["help"], shown), **option)]


AlbumArg = Annotated[Path, typer.Argument(help="Album folder (searched recursively).", show_default=False)]
OutOpt = settings_option("output")
WaitOpt = settings_option("wait")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]

# The options of scan and restore that are not settings: name -> (annotation, default).
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "files_from": (Annotated[Optional[Path], typer.Option(
        "--files-from", metavar="FILE", allow_dash=True,
        help="Only these album files: one path per line (NUL-separated with --null), '-' reads "
             "stdin. Paths absolute, or relative to the current folder or to the album.")], None),
    "null": (Annotated[bool, typer.Option(
        "--null", help="--files-from entries end with NUL (find -print0).")], False),
    "config": (Annotated[Optional[Path], typer.Option(
        "--config", envvar=env_name("config"),
        help="TOML file with default settings (same names as the options).")], None),
    "as_json": (JsonOpt, False),
    "as_jsonl": (Annotated[bool, typer.Option(
        "--jsonl", help="Stream one JSON line per photo as it finishes, then a summary line (no "
                        "`photos`).")], False),
    "verbose": (Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="More log detail (-vv: debug).")], 0),
    "quiet": (Annotated[bool, typer.Option(
        "--quiet", "-q", help="Only warnings and errors on stderr.")], False),
}


def with_run_options(command: str) -> Callable[[F], F]:
    """Decorator of `scan` / `restore` (`command`): after the function's own parameters, the
    Settings options of `command`, then RUN_OPTIONS; they reach the function's **options."""
    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = [(f.name, settings_option(f.name), None) for f in settings_fields(command)]
        added += [(name, annotation, default) for name, (annotation, default) in RUN_OPTIONS.items()]
        params = own + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                          default=default) for name, annotation, default in added]
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func
    return decorate


# --- help panels --------------------------------------------------------------------------------
def _panels(items: list[tuple[str | None, tuple[str, str]]], first: str) -> list[tuple[str, list]]:
    """[(panel, rows)] in order of first appearance, the rows without a panel first as `first`."""
    order: dict[str, list] = {first: []}
    for panel, row in items:
        order.setdefault(panel or first, []).append(row)
    return [(name, rows) for name, rows in order.items() if rows]


class PanelGroup(TyperGroup):
    """A command group whose plain --help lists its commands by `rich_help_panel` (the commands
    without one first, under "Commands")."""

    def format_commands(self, ctx, formatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        items = [(getattr(cmd, "rich_help_panel", None), (name, cmd.get_short_help_str(limit)))
                 for name, cmd in commands]
        for panel, rows in _panels(items, "Commands"):
            with formatter.section(panel):
                formatter.write_dl(rows)


class PanelCommand(TyperCommand):
    """A command whose plain --help lists its options by `rich_help_panel` (those without one
    first, under "Options")."""

    def format_options(self, ctx, formatter) -> None:
        items = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                argument = param.param_type_name == "argument"
                items.append(("Arguments" if argument else getattr(param, "rich_help_panel", None), record))
        for panel, rows in _panels(items, "Options"):
            with formatter.section(panel):
                formatter.write_dl(rows)


# --- eval's two modes ---------------------------------------------------------------------------
def given(ctx: typer.Context, name: str) -> bool:
    """Whether parameter `name` came from the command line or the environment (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def refuse_panel(ctx: typer.Context, panel: str, why: str) -> None:
    """UsageError naming the first option of help panel `panel` that was given: `<flag> <why>`."""
    for param in ctx.command.params:
        if getattr(param, "rich_help_panel", None) == panel and param.name and given(ctx, param.name):
            raise UsageError(f"{param.opts[0]} {why}")


def check_eval_mode(ctx: typer.Context, albums: bool) -> None:
    """Refuse the options of the other mode of `eval` (crop evaluation vs --albums benchmark)."""
    if albums:
        refuse_panel(ctx, CROPS_PANEL, "is an option of the crop evaluation; it does not apply with --albums")
    else:
        refuse_panel(ctx, ALBUMS_PANEL, "applies only with --albums (the album benchmark)")


# --- training commands --------------------------------------------------------------------------
RecipeOpt = Annotated[Optional[Path], typer.Option(
    "--recipe", metavar="FILE", help="Training recipe, TOML or JSON (the shipped one: "
                                     "tools/albumfix-s128.toml) [default: TrainConfig's defaults].")]
OldConfigOpt = Annotated[Optional[Path], typer.Option("--config", metavar="FILE", hidden=True,
                                                      help="Deprecated name of --recipe.")]


def recipe_path(recipe: Path | None, config: Path | None) -> Path | None:
    """The recipe file of `train`: --recipe, or --config (its deprecated name; a note on stderr)."""
    if config is not None:
        if recipe is not None:
            raise UsageError("give --recipe only (--config is its deprecated name)")
        typer.echo("albumfix: note: train --config is deprecated; use --recipe (the same file)", err=True)
        recipe = config
    if recipe is not None and not recipe.is_file():
        raise UsageError(f"no recipe file {recipe}")
    return recipe


_OVERRIDE = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.S)


def split_overrides(args: list[str], recipe: type) -> tuple[list[Path], dict[str, Any]]:
    """Positional arguments -> (paths, {field: value}): `NAME=VALUE` that is not an existing path is
    an override of dataclass `recipe`'s field NAME, its value converted to the field's type."""
    hints = typing.get_type_hints(recipe)
    paths, overrides = [], {}
    for arg in args:
        match = _OVERRIDE.match(arg)
        if match is None or Path(arg).exists():
            paths.append(Path(arg))
            continue
        name, value = match.groups()
        if name not in hints:
            raise UsageError(f"unknown {recipe.__name__} option {name!r}; "
                             f"choose from {', '.join(f.name for f in fields(recipe))}")
        overrides[name] = _convert(name, value, hints[name])
    return paths, overrides


def _convert(name: str, value: str, kind: Any) -> Any:
    """`value` (text) as a `kind` (bool, int, float or str)."""
    if kind is bool:
        if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise UsageError(f"{name}={value}: not true or false")
        return value.lower() in ("1", "true", "yes", "on")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name}={value}: not a{'n' if kind is int else ''} "
                         f"{getattr(kind, '__name__', kind)}") from None


def merge_flags(overrides: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """KEY=VALUE overrides and the flags for the same fields (None: not given); one of each."""
    chosen = {k: v for k, v in flags.items() if v is not None}
    twice = sorted(set(chosen) & set(overrides))
    if twice:
        raise UsageError(f"{twice[0]} given twice: as --{twice[0].replace('_', '-')} and as {twice[0]}=VALUE")
    return {**overrides, **chosen}
