"""Run one measurement of a benchmark script in a fresh Python process, so that its peak
memory and its loaded models are its own: the script runs itself with `--one VALUE` and prints
one JSON object as its last stdout line."""
from __future__ import annotations

import json
import subprocess
import sys


def measure(script: str, args: list[str], one: str) -> dict:
    """`python script *args --one one` -> the JSON object it printed last; exits with the
    child's stderr tail when it failed."""
    child = subprocess.run([sys.executable, script, *args, "--one", one], capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"{one} failed: {child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])
