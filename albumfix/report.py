"""The human-readable report: `OUT/report.html`, a before/after page for every restored photo.

Images are referenced, not embedded: the originals by their path relative to OUT (they stay in
the album), the outputs in OUT, and per-face strips (LQ | exemplar | restored) written by the
compose stage under `OUT/.albumfix/report/` (albumfix.thumbnails). The machine-readable summary is
the `--json` output; the page links the review of the damaged faces (albumfix.review).
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from albumfix.atomic import atomic_write_bytes
from albumfix.thumbnails import strip_path

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
h2{margin-top:2em;font-size:1.1em;word-break:break-all}
.pair{display:flex;gap:1em;flex-wrap:wrap}
.pair figure{margin:0}.pair img{max-width:46vw;max-height:60vh;border:1px solid #ccc}
.faces{display:flex;gap:1em;flex-wrap:wrap;margin-top:.5em}
.faces figure{margin:0;font-size:.85em}.faces img{height:128px;border:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left}
.failed{color:#a00}
"""


def _href(target: Path, start: Path) -> str:
    """Relative URL of `target`; a name that is not valid UTF-8 keeps its bytes (%XX)."""
    return quote(Path(os.path.relpath(target, start)).as_posix(), errors="surrogateescape")


def _face_caption(face: dict, names: dict) -> str:
    person = face.get("person")
    who = names.get(person) or (f"person {person}" if person else "unknown person")
    restored = face.get("restored", {})
    exemplar = restored.get("exemplar")
    guide = f"exemplar {exemplar}" if exemplar else "no exemplar (unguided)"
    return f"{who} · {guide}"


def _review_link(data: dict) -> str:
    """A line linking review.html: how many damaged faces were left unguided."""
    from albumfix.review import PAGE, damaged_faces

    damaged = damaged_faces(data)
    unguided = sum(bool(f.get("unguided")) for _, f in damaged)
    return (f"<p class='review'>{len(damaged)} damaged faces, {unguided} left unguided: "
            f"<a href='{PAGE}'>review them and confirm who they are</a></p>")


def render_html(report, out: Path) -> str:
    """The page for a RunReport (see albumfix.stages.outcomes.RunReport)."""
    data = report.to_json()
    names = {p["id"]: p["name"] for p in data["people"] if p.get("name")}
    s = data["summary"]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>albumfix report</title>",
        f"<style>{STYLE}</style><h1>albumfix report</h1>",
        f"<p>Album <code>{html.escape(data['album'])}</code> → <code>{html.escape(data['output'])}</code></p>",
        "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in s.items()) + "</table>",
        _review_link(data),
    ]
    for photo in data["photos"]:
        if photo["status"] == "failed":
            parts.append(f"<p class='failed'>✗ {html.escape(photo['path'])}: {html.escape(photo['reason'])}</p>")
        if photo["status"] != "restored" or not photo["output"]:
            continue
        before = _href(Path(data["album"]) / photo["path"], out)
        after = _href(out / photo["output"], out)
        parts.append(f"<h2>{html.escape(photo['path'])}</h2><div class='pair'>"
                     f"<figure><img src='{before}' alt='before'><figcaption>before</figcaption></figure>"
                     f"<figure><img src='{after}' alt='after'><figcaption>after</figcaption></figure></div>")
        strips = []
        for face in photo["faces"]:
            if "restored" not in face:
                continue
            thumb = quote(strip_path(face["id"]).as_posix())
            caption = html.escape(_face_caption(face, names))
            strips.append(f"<figure><img src='{thumb}' alt='LQ | exemplar | restored'>"
                          f"<figcaption>{html.escape(face['id'])}: {caption}</figcaption></figure>")
        parts.append("<div class='faces'>" + "".join(strips) + "</div>")
    return "\n".join(parts) + "\n"


def write_html_report(report, out: Path) -> Path:
    """Write OUT/report.html atomically; returns its path. Undecodable bytes of file names show
    as U+FFFD in the text (their links keep them)."""
    path = Path(out) / "report.html"
    atomic_write_bytes(path, render_html(report, Path(out)).encode("utf-8", errors="replace"))
    return path
