"""Manual corrections of the grouping, stored in the album index and never overwritten.

Every edit pins the faces it touches (`assignments.manual = 1`); splits also store must-not-link
pairs and exclusions an `exclude` constraint, which the grouping stage reads as `Overrides`.
"""
from __future__ import annotations

from albumfix.album.index import AlbumIndex


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


def exclude_faces(ix: AlbumIndex, faces: list[str]) -> str:
    unknown = sorted(set(faces) - {f.face_id for f in ix.faces()})
    if unknown:
        raise PeopleEditError(f"unknown face ids: {', '.join(unknown)}")
    ix.exclude_faces(faces)
    return f"excluded {len(faces)} faces"
