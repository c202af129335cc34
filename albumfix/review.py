"""The review of a restore: which damaged faces were guided by whom, which were left unguided and
why, and the one command that confirms each face's person.

Built from a run's JSON (`RunReport.to_json`: each damaged face's `exemplars`, `unguided` cause
and `candidates`, and `restored`), it is written by every `albumfix restore` as
- `OUT/review.html`: one item per damaged face left unguided (its thumbnail, the cause in words,
  the people it may be, each with the thumbnail of their face nearest it, their distance and the
  command that confirms it), then the guided faces with the exemplar used and the command that
  undoes it (`people split`); images are relative links into `OUT/.albumfix/report/`;
- `OUT/review-decisions.txt`: the same confirmations, commented out, for the user to uncomment and
  apply in one go (`albumfix people apply`; format: albumfix.people.edit.parse_decisions);
- `OUT/.albumfix/review.json`: the review as data (`albumfix review` prints it).
"""
from __future__ import annotations

import html
import json
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from albumfix.atomic import atomic_write_bytes
from albumfix.people.edit import decision_line
from albumfix.report import STYLE
from albumfix.thumbnails import strip_path

PAGE = "review.html"
DECISIONS = "review-decisions.txt"
DATA = Path(".albumfix") / "review.json"

CAUSES = {  # albumfix.plan.UNGUIDED_CAUSES in words: (title, explanation)
    "guidance_off": ("Guidance turned off", "restored with --exemplars 0"),
    "excluded": ("Excluded", "you excluded it (people exclude), or no identity could be read from it"),
    "no_better_photo": ("No better photo of anyone",
                        "no face in another photo of the album is clearly sharper than this one"),
    "confirmed": ("Its person has no better photo", "the person you set for it has no clearly sharper photo"),
    "not_verified": ("No person verified",
                     "no one in the album is clearly nearer to it than everyone else (too far, or two "
                     "people about as near)"),
    "guard_rejected": ("Rejected by the guard",
                       "the guided restoration moved the face away from its person or blurred it: the "
                       "original face was kept"),
}


def cause_words(cause: str) -> str:
    """`title: explanation` of an unguided cause."""
    title, why = CAUSES.get(cause, (cause, ""))
    return f"{title}: {why}" if why else title


REVIEW_STYLE = """
.item{display:flex;gap:1.5em;align-items:flex-start;border-top:1px solid #ddd;padding:1em 0}
.item figure{margin:0;font-size:.85em;flex:0 0 auto}.item img{height:128px;border:1px solid #ccc;display:block}
.unguided>figure{flex:0 0 150px}.why{flex:0 0 22em}.why p{margin:.3em 0}.detail{color:#666;font-size:.8em;word-break:break-word}
.candidates{display:flex;gap:1em;flex-wrap:wrap;flex:1}
.candidate{background:#fff;border:1px solid #ddd;padding:.5em;width:300px}
.candidate figcaption{margin:.3em 0}
code.command{display:block;background:#eef;padding:.3em;font-size:13px;word-break:break-all;user-select:all}
.none{color:#666;font-style:italic}
"""


@dataclass
class Offer:
    """A person offered for a face: distance (cosine, the album-wide rule's) and `face`, their
    face nearest it; photo: its album path; thumb: its thumbnail relative to OUT (None: none);
    command: the one line that confirms it."""

    person: str
    name: str | None
    distance: float
    face: str
    photo: str | None
    thumb: str | None
    command: str


@dataclass
class UnguidedFace:
    """A damaged face left unguided: cause (albumfix.plan.UNGUIDED_CAUSES) and detail (the
    plan's reason, or the guard's); thumb relative to OUT; candidates nearest first."""

    face: str
    photo: str
    cause: str
    detail: str
    thumb: str | None
    candidates: list[Offer] = field(default_factory=list)


@dataclass
class GuidedFace:
    """A damaged face guided by `exemplar` (a face of `exemplar_photo`) at `strength` (None: not
    restored in this run); strip: `LQ | exemplar | restored` relative to OUT (None: not restored);
    undo: the command that makes it someone else (unguided)."""

    face: str
    photo: str
    person: str
    name: str | None
    exemplar: str
    exemplar_photo: str | None
    strength: float | None
    strip: str | None
    undo: str


@dataclass
class Review:
    """album, output: absolute paths; apply: the command that applies the decisions file."""

    album: str
    output: str
    apply: str
    unguided: list[UnguidedFace]
    guided: list[GuidedFace]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Review":
        unguided = [UnguidedFace(**{**u, "candidates": [Offer(**c) for c in u["candidates"]]})
                    for u in data["unguided"]]
        return cls(data["album"], data["output"], data["apply"], unguided,
                   [GuidedFace(**g) for g in data["guided"]])


def command(album: str, out: str, *words: str) -> str:
    """`albumfix WORDS[0] WORDS[1] ALBUM WORDS[2:] [-o OUT]` (shell-quoted; no -o for the default
    OUT, ALBUM-restored beside the album)."""
    default = Path(album).parent / f"{Path(album).name}-restored"
    where = [] if Path(out) == default else ["-o", out]
    return shlex.join(["albumfix", *words[:2], album, *words[2:], *where])


def damaged_faces(run: dict) -> list[tuple[str, dict]]:
    """(album path, face object) of each face of the run that was to be restored."""
    return [(p["path"], f) for p in run["photos"] for f in p["faces"] if f["action"] == "restore"]


def faces_shown(run: dict) -> set[str]:
    """Face ids whose own thumbnail the page shows: the unguided faces and their candidates'."""
    unguided = [f for _, f in damaged_faces(run) if f.get("unguided")]
    return {f["id"] for f in unguided} | {c["face"] for f in unguided for c in f["candidates"]}


def build_review(run: dict, photo_of: dict[str, str], thumbs: dict[str, Path]) -> Review:
    """The review of a run's JSON. photo_of: face id -> album path of its photo; thumbs: face id
    -> its own thumbnail (relative to OUT)."""
    album, out = run["album"], run["output"]
    names = {p["id"]: p["name"] for p in run["people"] if p.get("name")}
    thumb = lambda face: thumbs[face].as_posix() if face in thumbs else None  # noqa: E731
    unguided, guided = [], []
    for path, f in damaged_faces(run):
        restored = f.get("restored") or {}
        if f.get("unguided"):
            guard = (restored.get("guard") or {}).get("reason", "")
            unguided.append(UnguidedFace(
                f["id"], path, f["unguided"], guard if f["unguided"] == "guard_rejected" else f["reason"],
                thumb(f["id"]),
                [Offer(c["person"], names.get(c["person"]), c["distance"], c["face"], photo_of.get(c["face"]),
                       thumb(c["face"]), command(album, out, "people", "confirm", f["id"], c["person"]))
                 for c in f["candidates"]]))
        elif f["exemplars"]:
            exemplar = restored.get("exemplar") or f["exemplars"][0]["face"]
            guided.append(GuidedFace(
                f["id"], path, f["person"], names.get(f["person"]), exemplar, photo_of.get(exemplar),
                restored.get("strength"), strip_path(f["id"]).as_posix() if restored else None,
                command(album, out, "people", "split", f["person"], f["id"])))
    apply = command(album, out, "people", "apply", str(Path(out) / DECISIONS))
    return Review(album, out, apply, unguided, guided)


def _img(src: str | None, alt: str) -> str:
    if src is None:
        return f"<span class='none'>({html.escape(alt)}: no picture)</span>"
    return f"<img src='{quote(src)}' alt='{html.escape(alt, quote=True)}'>"


def _who(person: str | None, name: str | None) -> str:
    return html.escape(f"{name} ({person})" if name else f"person {person}" if person else "no person")


def _unguided_html(u: UnguidedFace) -> str:
    title, why = CAUSES.get(u.cause, (u.cause, ""))
    if u.candidates:
        offers = "".join(
            f"<figure class='candidate'>{_img(c.thumb, 'candidate ' + c.face)}"
            f"<figcaption>{_who(c.person, c.name)}<br>distance {c.distance:.3f} · "
            f"{html.escape(c.photo or '?')}</figcaption>"
            f"<code class='command'>{html.escape(c.command)}</code></figure>" for c in u.candidates)
    else:
        offers = "<p class='none'>nobody to offer: no clearly better face of anyone in another photo</p>"
    return (f"<section class='item unguided' id='face-{html.escape(u.face)}' data-cause='{u.cause}'>"
            f"<figure>{_img(u.thumb, 'face ' + u.face)}<figcaption>{html.escape(u.photo)}<br>"
            f"{html.escape(u.face)}</figcaption></figure>"
            f"<div class='why'><p class='cause'><b>{html.escape(title)}</b></p><p>{html.escape(why)}</p>"
            f"<p class='detail'>{html.escape(u.detail)}</p></div>"
            f"<div class='candidates'>{offers}</div></section>")


def _guided_html(g: GuidedFace) -> str:
    strength = "" if g.strength is None else f" · pasted at strength {g.strength:g}"
    return (f"<section class='item guided' id='face-{html.escape(g.face)}'>"
            f"<figure class='strip'>{_img(g.strip, 'LQ | exemplar | restored')}"
            f"<figcaption>{html.escape(g.photo)}<br>{html.escape(g.face)}</figcaption></figure>"
            f"<div class='why'><p>guided by <b>{_who(g.person, g.name)}</b>: exemplar "
            f"<span class='exemplar'>{html.escape(g.exemplar)}</span> from "
            f"{html.escape(g.exemplar_photo or '?')}{strength}</p>"
            f"<p>not this person? (restored unguided next time)</p>"
            f"<code class='command'>{html.escape(g.undo)}</code></div></section>")


def render_review(review: Review) -> str:
    """review.html (written in OUT; its links are relative to OUT)."""
    counts = Counter(u.cause for u in review.unguided)
    by_cause = "".join(f"<li>{n} · {html.escape(cause_words(c))}</li>" for c, n in counts.items())
    return "\n".join([
        "<!doctype html><meta charset='utf-8'><title>albumfix review</title>",
        f"<style>{STYLE}{REVIEW_STYLE}</style><h1>albumfix review</h1>",
        f"<p>Album <code>{html.escape(review.album)}</code> → <code>{html.escape(review.output)}</code>: "
        f"{len(review.unguided) + len(review.guided)} damaged faces, {len(review.guided)} guided by a photo "
        f"of their person, {len(review.unguided)} left unguided.</p><ul class='causes'>{by_cause}</ul>",
        "<p>Confirm a face's person with the command under that person, or uncomment the right lines of "
        f"<a href='{DECISIONS}'>{DECISIONS}</a> and apply them in one go:</p>"
        f"<code class='command'>{html.escape(review.apply)}</code>"
        "<p>The next <code>albumfix restore</code> guides the confirmed faces and redoes only the photos "
        "that changed.</p>",
        f"<h2 id='unguided'>Left unguided ({len(review.unguided)})</h2>",
        *(map(_unguided_html, review.unguided) if review.unguided else ["<p class='none'>none</p>"]),
        f"<h2 id='guided'>Guided ({len(review.guided)})</h2>",
        *(map(_guided_html, review.guided) if review.guided else ["<p class='none'>none</p>"]),
    ]) + "\n"


def render_decisions(review: Review) -> str:
    """review-decisions.txt: per face left unguided with people to offer, a comment saying which
    face and why, then one commented-out `confirm FACE PERSON` line per candidate."""
    lines = [
        "# albumfix review: the people each damaged face left unguided may be, nearest first.",
        "# Uncomment (delete the leading '# ') the one 'confirm' line of a face that names its person;",
        "# leave a face's lines as they are when none does. Then apply them all with",
        f"#   {review.apply}",
        "# and run `albumfix restore` again: it guides the confirmed faces, redoing only their photos.",
        "# Every `albumfix restore` writes this file anew: apply your edits before the next one.",
    ]
    for u in review.unguided:
        if not u.candidates:
            continue
        lines += ["", f"# {u.photo}  face {u.face}: {cause_words(u.cause)}"]
        for c in u.candidates:
            who = f"{c.name}, " if c.name else ""
            lines.append(f"# {decision_line(u.face, c.person)}   # {who}distance {c.distance:.3f}, "
                         f"their photo {c.photo or '?'}")
    return "\n".join(lines) + "\n"


def write_review(review: Review, out: Path) -> Path:
    """Write review.html, review-decisions.txt and .albumfix/review.json into OUT atomically;
    returns the page's path."""
    out = Path(out)
    atomic_write_bytes(out / DATA, json.dumps(review.to_json(), indent=1).encode("ascii"))
    atomic_write_bytes(out / DECISIONS, render_decisions(review).encode("utf-8", errors="replace"))
    atomic_write_bytes(out / PAGE, render_review(review).encode("utf-8", errors="replace"))
    return out / PAGE


def read_review(out: Path) -> Review | None:
    """The review the last restore into OUT wrote; None when there is none."""
    path = Path(out) / DATA
    if not path.is_file():
        return None
    return Review.from_json(json.loads(path.read_text(encoding="ascii")))
