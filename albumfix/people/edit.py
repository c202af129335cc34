"""Manual corrections of the grouping, stored in the album index and never overwritten.

Every edit pins the faces it touches (`assignments.manual = 1`); splits also store must-not-link
pairs and exclusions an `exclude` constraint, which the grouping stage reads as `Overrides`.
`confirm_faces` pins faces one by one into people; it reads the decisions file `albumfix review`
writes (`parse_decisions`: one `confirm FACE PERSON` line per face, `#` starts a comment).
"""
from __future__ import annotations

from collections import Counter

from albumfix.album.index import AlbumIndex


DECISION = "confirm"


class PeopleEditError(ValueError):
    """An edit names an unknown person or face; the message says which."""


def _members(ix: AlbumIndex) -> dict[str, list[str]]:
    people: dict[str, list[str]] = {}
    for face_id, (person, _) in sorted(ix.assignments().items()):
        people.setdefault(person, []).append(face_id)
    return people


def _faces_of(ix: AlbumIndex, person: str) -> list[str]:
    faces = _members(ix).get(person)
    if not faces:
        raise PeopleEditError(f"no person {person!r} in this album (see `albumfix people ALBUM`)")
    return faces


def _check_known_faces(ix: AlbumIndex, faces: list[str]) -> None:
    """PeopleEditError naming the faces the album index does not know."""
    unknown = sorted(set(faces) - {f.face_id for f in ix.faces()})
    if unknown:
        raise PeopleEditError(f"unknown face ids: {', '.join(unknown)}")


def list_people(ix: AlbumIndex) -> list[dict]:
    """[{"id", "name", "faces", "photos"}] sorted by id; photos[i] is the album path of the photo
    of faces[i] (None if no scanned file has that content any more)."""
    names = ix.person_names()
    photo_of = ix.face_photos()
    return [{"id": pid, "name": names.get(pid), "faces": faces, "photos": [photo_of.get(f) for f in faces]}
            for pid, faces in sorted(_members(ix).items())]


def name_person(ix: AlbumIndex, person: str, name: str) -> str:
    ix.set_manual(_faces_of(ix, person), person)
    ix.set_person_name(person, name)
    return f"{person} is now {name!r}"


def merge_people(ix: AlbumIndex, people: list[str]) -> str:
    if len(people) < 2:
        raise PeopleEditError("merge needs at least two person ids")
    keep = people[0]
    faces = [f for p in people for f in _faces_of(ix, p)]
    names = ix.person_names()
    ix.set_manual(faces, keep)
    name = names.get(keep) or next((names[p] for p in people if p in names), None)
    ix.set_person_name(keep, name)
    return f"merged {', '.join(people[1:])} into {keep} ({len(faces)} faces)"


def split_person(ix: AlbumIndex, person: str, faces: list[str]) -> str:
    members = _faces_of(ix, person)
    unknown = sorted(set(faces) - set(members))
    if unknown:
        raise PeopleEditError(f"faces not in {person}: {', '.join(unknown)}")
    rest = [f for f in members if f not in faces]
    if not rest:
        raise PeopleEditError("split must leave at least one face with the person")
    taken = set(_members(ix))
    new_person = min(faces)
    while new_person in taken:
        new_person += "~split"
    ix.set_manual(rest, person)
    ix.set_manual(sorted(faces), new_person)
    for a in faces:
        for b in rest:
            ix.add_constraint("cannot_link", *sorted((a, b)))
    return f"moved {len(faces)} faces from {person} to new person {new_person}"


def decision_line(face: str, person: str) -> str:
    """The decisions file's line that confirms FACE as PERSON."""
    return f"{DECISION} {face} {person}"


def parse_decisions(text: str) -> list[tuple[str, str]]:
    """[(face, person)] of a decisions file's `confirm FACE PERSON` lines, in order; blank lines
    and everything after a `#` are ignored; any other line is an error naming its number."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3 or words[0] != DECISION:
            raise PeopleEditError(f"line {number}: expected `{DECISION} FACE PERSON`, found {line.strip()!r}")
        pairs.append((words[1], words[2]))
    return pairs


def confirm_faces(ix: AlbumIndex, pairs: list[tuple[str, str]]) -> str:
    """Put each FACE into its PERSON, pinned (`person_confirmed`): the next restore guides it by
    that person's best-matching clearly better photo. Only the faces named move (the person's
    other faces keep their state, so no other photo is redone). All pairs are checked first
    (known faces and people, not excluded, each face once); then all are written in one
    transaction, or none."""
    faces = [f for f, _ in pairs]
    twice = sorted(f for f, n in Counter(faces).items() if n > 1)
    if twice:
        raise PeopleEditError(f"faces confirmed more than once: {', '.join(twice)}")
    _check_known_faces(ix, faces)
    excluded = sorted(set(faces) & {a for a, _ in ix.constraints("exclude")})
    if excluded:
        raise PeopleEditError(f"excluded faces (false detections or strangers): {', '.join(excluded)}")
    for person in sorted({p for _, p in pairs}):
        _faces_of(ix, person)
    ix.set_manual_assignments(dict(pairs))
    names = ix.person_names()
    lines = [f"confirmed {face} as {person}" + (f" ({names[person]})" if person in names else "")
             for face, person in pairs]
    lines.append(f"{len(pairs)} face(s) confirmed: the next `albumfix restore` guides them and redoes only "
                 "the photos that changed")
    return "\n".join(lines)


def exclude_faces(ix: AlbumIndex, faces: list[str]) -> str:
    _check_known_faces(ix, faces)
    ix.exclude_faces(faces)
    return f"excluded {len(faces)} faces"
