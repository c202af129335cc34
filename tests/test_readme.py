"""The README says what is true: its status table is the one generated from the current release's
benchmark reports, its first screen has the picture and the two commands, and it quotes no
other measured figure (those live in docs/BENCHMARKS.md with the command that made them)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from PIL import Image

import albumfix
from albumfix.settings import tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import status_table  # noqa: E402  (tools/ is not a package)

README = (REPO / "README.md").read_text(encoding="utf-8")
FIRST_SCREEN = "\n".join(README.splitlines()[:24])
MEASURED = re.compile(r"[+-]?\d+(?:\.\d+)?\s?(?:%|dB|x\b|min\b|minutes|s/step|GMAC|faces/s)")  # a figure with its unit


def prose(text: str) -> list[str]:
    """The README's lines a reader takes figures from: without code blocks, the generated status
    block and the options table (tests/test_cli_schema.py checks its defaults against Settings)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S).replace(status_table.status_block(text), "")
    return [line for line in text.splitlines() if not line.startswith("| `-")]


def version_facts() -> dict[str, str]:
    """The versions the README may quote, each read from the file that sets it."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    torch_range = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    python = pyproject["project"]["requires-python"].removeprefix(">=")
    return {"python": python, "torch pin": makefile_torch, **dict(zip(
        ("torch low", "torch high"), re.fullmatch(r"torch>=([\d.]+),<([\d.]+)", torch_range).groups()))}


def test_status_table_is_generated_from_the_current_release_reports():
    albums, probe = status_table.load_reports(albumfix.__version__, REPO / "docs" / "benchmarks")
    assert status_table.status_block(README) == status_table.render(albumfix.__version__, albums, probe)


def test_status_table_changes_with_its_report():
    albums, probe = status_table.load_reports(albumfix.__version__, REPO / "docs" / "benchmarks")
    albums["families"]["all"]["product"]["psnr_gain"] += 0.1
    assert status_table.status_block(README) != status_table.render(albumfix.__version__, albums, probe)


def test_first_screen_has_the_picture_and_the_two_commands():
    picture = re.search(r"!\[[^\]]+\]\(([^)]+)\)", FIRST_SCREEN)
    assert picture, "no picture on the README's first screen"
    with Image.open(REPO / picture.group(1)) as image:
        assert image.width >= 400 and image.height >= 200
    assert "make demo" in FIRST_SCREEN and "make test" in FIRST_SCREEN


def test_readme_quotes_no_figure_outside_the_generated_table():
    found = [(line, m.group()) for line in prose(README) for m in MEASURED.finditer(line)]
    assert not found, f"figures outside the status table (move them to docs/BENCHMARKS.md): {found}"


def test_versions_the_readme_quotes_are_the_ones_the_project_sets():
    allowed = set(version_facts().values())
    quoted = {m.group() for line in prose(README) for m in re.finditer(r"\d+(?:\.\d+)+", line)}
    assert quoted <= allowed, f"versions or decimals in the README that no project file sets: {quoted - allowed}"
    assert version_facts()["torch pin"] in quoted  # the pin the README tells users about is checked


@pytest.mark.parametrize("text, expected", [
    ("a +0.5 dB gain\n", ["+0.5 dB"]),
    ("```\nmake x  # 12 min\n```\nfine\n", []),
    ("| `--strength S` | 1.0 | 0 keeps |\n45 % of faces\n", ["45 %"]),
])
def test_the_figure_check_finds_figures_in_prose_only(text, expected):
    block = status_table.BEGIN + "\n| 12 % |\n" + status_table.END
    assert [m.group() for line in prose(text + block) for m in MEASURED.finditer(line)] == expected
