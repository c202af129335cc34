"""One option schema: the options of scan and restore come from Settings (defaults, help, env
vars, precedence), eval's two modes refuse each other's options, developer commands are listed
apart, and train's recipe has one name (--config its deprecated alias). In-process and fast."""
from __future__ import annotations

import logging
import re
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

import albumfix.settings
from albumfix.cli import app
from albumfix.cli_options import flag_name
from albumfix.errors import EXIT_USAGE
from albumfix.settings import Settings, SettingsError
from conftest import REPO

RESTORE_ONLY = {"overwrite", "model", "weights", "device", "batch_size", "precision", "strength", "guard",
                "save_faces", "threads", "gpus_per_worker"}
USER_COMMANDS = ["restore", "scan", "review", "doctor", "people", "models"]
DEVELOPER_COMMANDS = ["dataset", "pairs", "train", "train-identity", "eval"]


@pytest.fixture(autouse=True)
def albumfix_logger():
    """scan/restore set up the albumfix logger on the runner's stderr: put it back afterwards."""
    logger = logging.getLogger("albumfix")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def invoke(*args: str, env: dict | None = None):
    """`albumfix ARGS` in-process; help on wide lines (one option per record, unwrapped)."""
    return CliRunner().invoke(app, list(args), env=env, terminal_width=1000, max_content_width=1000)


def option_records(help_text: str) -> dict[str, str]:
    """--help's option list -> {flag: the option's whole record}."""
    records, current = [], None
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            current = [line.strip()]
            records.append(current)
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
        else:
            current = None
    table = {}
    for record in records:
        text = " ".join(record)
        for flag in re.findall(r"(?<![\w-])--?[a-z][\w-]*", text.split("  ")[0]):
            table.setdefault(flag, text)
    return table


def restore_fields(command: str) -> list:
    return [f for f in fields(Settings) if command == "restore" or f.name not in RESTORE_ONLY]


@pytest.mark.parametrize("command", ["scan", "restore"])
def test_every_setting_is_an_option_with_its_settings_default_and_env_var(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    records = option_records(result.stdout)
    for f in fields(Settings):
        flag = flag_name(f.name)
        if command == "scan" and f.name in RESTORE_ONLY:
            assert flag not in records, f"scan takes {flag}"
            continue
        assert flag in records, f"{command} --help lacks {flag}"
        record = records[flag]
        assert f"env var: ALBUMFIX_{f.name.upper()}" in record
        shown = re.findall(r"\[default: ([^\]]+)\]", record)
        if isinstance(f.default, bool):
            assert shown == (["on"] if f.default else []), record
            if f.default:
                assert f"--no-{flag[2:]}" in record
        elif f.default is None:
            assert len(shown) == 1 and shown[0] == f.metadata["shown"], record
        elif isinstance(f.default, (int, float)):
            assert len(shown) == 1 and float(shown[0]) == f.default, record
        else:
            assert shown == [f.default], record


def test_the_readme_table_shows_the_settings_defaults():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Options of `restore` and `scan`", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|")) if line.startswith("| `-") else []
        for flag in re.findall(r"--[a-z][\w-]*", cells[0] if cells else ""):
            rows.setdefault(flag, cells[1].strip().strip("`"))
    for f in fields(Settings):
        written = rows.get(flag_name(f.name))
        assert written is not None, f"README's options table lacks {flag_name(f.name)}"
        if isinstance(f.default, bool):
            assert written == ("on" if f.default else "off"), (f.name, written)
        elif isinstance(f.default, (int, float)):
            assert float(written) == f.default, (f.name, written)
        elif isinstance(f.default, str):
            assert written == f.default, (f.name, written)


def _values(f) -> tuple[list[str], object, str, object]:
    """(flag arguments, the value they give, env var text, the value it gives) of field `f`."""
    kind = type(f.default) if f.default is not None else (Path if "Path" in str(f.type) else str)
    flag = flag_name(f.name)
    if kind is bool:
        return [flag], True, "false", False
    flag_text, env_text = {str: ("from-flag", "from-env"), int: ("5", "3"), float: ("0.75", "0.25"),
                           Path: ("/from/flag", "/from/env")}[kind]
    return [flag, flag_text], kind(flag_text), env_text, kind(env_text)


@pytest.mark.parametrize("command", ["scan", "restore"])
def test_a_flag_beats_its_env_var_and_an_absent_option_leaves_the_config_file_its_say(command, monkeypatch):
    seen = []

    def recording_load(config, given):
        seen.append(dict(given))
        raise SettingsError("stop here")

    monkeypatch.setattr(albumfix.settings, "load_settings", recording_load)
    chosen = restore_fields(command)
    env = {f"ALBUMFIX_{f.name.upper()}": _values(f)[2] for f in chosen}
    flags = [arg for f in chosen for arg in _values(f)[0]]
    for args, environment in ((flags, env), ([], env), ([], dict.fromkeys(env))):  # None: unset
        result = invoke(command, "album", *args, env=environment)
        assert result.exit_code == EXIT_USAGE and "stop here" in result.stderr, result.output
    with_flags, env_only, nothing = seen
    for f in chosen:
        assert with_flags[f.name] == _values(f)[1], f.name
        assert env_only[f.name] == _values(f)[3], f.name
        assert nothing[f.name] is None, f.name  # not given: the config file, then the default


def test_flag_env_and_validation_end_to_end(tmp_path):
    missing = str(tmp_path / "no-album")
    env = {"ALBUMFIX_STRENGTH": "3"}
    flag_wins = invoke("restore", missing, "--strength", "0.5", env=env)
    assert flag_wins.exit_code == 3 and "album not found" in flag_wins.stderr  # settings were valid
    env_only = invoke("restore", missing, env=env)
    assert env_only.exit_code == EXIT_USAGE and "--strength" in env_only.stderr


@pytest.mark.parametrize("args, flag", [
    (["--albums", "{tmp}", "--limit", "3"], "--limit"),
    (["--albums", "{tmp}", "--threads", "1"], "--threads"),
    (["--albums", "{tmp}", "--no-identity"], "--identity"),
    (["--people", "2"], "--people"),
    (["--family", "aged-print", "--limit", "4"], "--family"),
])
def test_eval_refuses_an_option_of_the_other_mode(tmp_path, args, flag):
    bench = tmp_path / "bench"
    result = invoke("eval", *[a.replace("{tmp}", str(bench)) for a in args])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "--albums" in lines[0]
    assert not bench.exists()


def test_every_eval_option_belongs_to_a_mode_and_threads_reads_like_restores():
    from typer.main import get_command

    from albumfix.cli_options import ALBUMS_PANEL, CROPS_PANEL

    eval_command = get_command(app).commands["eval"]
    panels = {p.name: getattr(p, "rich_help_panel", None) for p in eval_command.params}
    assert {name for name, panel in panels.items() if panel is None} == {"albums", "as_json"}
    assert panels["limit"] == panels["threads"] == CROPS_PANEL and panels["people"] == ALBUMS_PANEL
    restore_help = option_records(invoke("restore", "--help").stdout)
    eval_help = option_records(invoke("eval", "--help").stdout)
    for flag, default in (("--threads", "2"), ("--batch-size", "16")):
        meaning = restore_help[flag].split("  ", 1)[1].strip().split(" [default:")[0]
        assert meaning in eval_help[flag] and f"[default: {default}, not restore's" in eval_help[flag]


def test_help_lists_user_commands_before_developer_commands():
    text = invoke("--help").stdout
    listed = [m.group(1) for m in re.finditer(r"^  ([a-z][\w-]*)\s", text, re.M)]
    assert listed == USER_COMMANDS + DEVELOPER_COMMANDS
    header = text.index("Developer commands:")
    assert all(text.index(f"  {name} ") < header for name in USER_COMMANDS)
    assert all(text.index(f"  {name} ") > header for name in DEVELOPER_COMMANDS)


def test_train_recipe_and_its_deprecated_config_alias_parse_the_same(tmp_path):
    missing = str(tmp_path / "none.toml")
    new, old = invoke("train", "--recipe", missing), invoke("train", "--config", missing)
    assert new.exit_code == old.exit_code == EXIT_USAGE
    assert new.stderr == f"albumfix: error: no recipe file {missing}\n"
    note = "albumfix: note: train --config is deprecated; use --recipe (the same file)"
    assert old.stderr.splitlines() == [note, f"albumfix: error: no recipe file {missing}"]
    assert "--config" not in invoke("train", "--help").stdout
    both = invoke("train", "--recipe", missing, "--config", missing)
    assert both.exit_code == EXIT_USAGE and "--recipe only" in both.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 7\ncolour = 1\n")  # both spellings read the file: the same refusal
    results = [invoke("train", option, str(bad), "lr=1e-4") for option in ("--recipe", "--config")]
    assert [r.exit_code for r in results] == [EXIT_USAGE, EXIT_USAGE]
    assert results[0].stderr.splitlines()[-1] == results[1].stderr.splitlines()[-1]
    assert "colour" in results[0].stderr

    from albumfix.cli_options import recipe_path
    from albumfix.train.trainer import load_train_config

    shipped = REPO / "tools" / "albumfix-s128.toml"
    by_recipe = load_train_config(recipe_path(shipped, None), ["steps=9"])
    by_config = load_train_config(recipe_path(None, shipped), ["steps=9"])
    assert by_recipe == by_config and by_recipe.steps == 9


def test_train_identity_takes_key_value_overrides_beside_its_flags(tmp_path):
    from albumfix.cli_options import merge_flags, split_overrides
    from albumfix.train.identity import IdentityTraining

    odd = tmp_path / "a=b"
    odd.mkdir()
    roots, overrides = split_overrides([str(tmp_path), "steps=800", "lr=5e-5", str(odd)], IdentityTraining)
    assert roots == [tmp_path, odd] and overrides == {"steps": 800, "lr": 5e-5}
    assert IdentityTraining(**merge_flags(overrides, {"tuned_stages": 3, "lr": None})).tuned_stages == 3
    for args, message in ((["bogus=1"], "unknown IdentityTraining option 'bogus'"),
                          (["steps=many"], "steps=many: not an int"),
                          (["steps=5", "--steps", "4"], "steps given twice")):
        result = invoke("train-identity", str(tmp_path), *args)
        assert result.exit_code == EXIT_USAGE and message in result.stderr, result.output
    only_overrides = invoke("train-identity", "steps=5")
    assert only_overrides.exit_code == EXIT_USAGE and "identity folder" in only_overrides.stderr
