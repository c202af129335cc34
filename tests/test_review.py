"""The review of a restore (albumfix.review): the candidates and unguided causes the plan keeps,
review.html's content and its image links, the decisions file, `people confirm` / `people apply`,
and a confirmed face guided by the next restore, which redoes its photo alone."""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from albumfix.people.edit import PeopleEditError, parse_decisions
from albumfix.pipeline import Pipeline
from albumfix.review import CAUSES, DECISIONS, build_review, render_decisions, render_review
from albumfix.settings import Settings
from conftest import REPO, restore_all_args, run_cli, seeded_output
from test_plan import _plan
from test_verify import _album

OLD_PRINT = "1998/old print.jpg"


@pytest.fixture(scope="module")
def reviewed(album_copy, analysed_index, random_weights, tmp_path_factory) -> tuple[Path, dict]:
    """(OUT, JSON) of `restore --restore all` of the sample album: the two faces of the group
    print are unverified (their one candidate: the person of the 2009 photos), the two sharp
    2009 faces have no clearly better photo of anyone, the faded 1998 print is guided."""
    out = seeded_output(analysed_index, tmp_path_factory.mktemp("review") / "out")
    result = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--json", "-q")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


def faces_of(data: dict) -> dict[str, tuple[str, dict]]:
    """face id -> (album path, face object)."""
    return {f["id"]: (p["path"], f) for p in data["photos"] for f in p["faces"]}


def confirm_command(album: Path, out: Path, face: str, person: str) -> str:
    return shlex.join(["albumfix", "people", "confirm", str(album), face, person, "-o", str(out)])


class _ReviewPage(HTMLParser):
    """review.html as a reader sees it: per item (section), its id, cause, images, commands."""

    def __init__(self):
        super().__init__()
        self.items: list[dict] = []
        self.commands: list[str] = []  # outside items: the apply command
        self.links: list[str] = []
        self._code = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.items.append({"id": attrs["id"], "class": attrs["class"], "cause": attrs.get("data-cause"),
                               "images": [], "commands": [], "text": ""})
        elif tag == "img" and self.items:
            self.items[-1]["images"].append(attrs)
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "code" and "command" in (attrs.get("class") or ""):
            self._code = []

    def handle_endtag(self, tag):
        if tag == "code" and self._code is not None:
            (self.items[-1]["commands"] if self.items else self.commands).append("".join(self._code))
            self._code = None

    def handle_data(self, data):
        if self._code is not None:
            self._code.append(data)
        if self.items:
            self.items[-1]["text"] += data


def test_the_plan_ranks_the_people_a_face_left_unguided_may_be(tmp_path):
    unsure = _plan(tmp_path, with_ladders=False)  # two people about as near: not verified
    face = unsure.faces["q"]
    assert face.exemplars == [] and face.unguided == "not_verified"
    people = {fid: p.person for fid, p in unsure.faces.items()}
    assert [c.person for c in face.candidates] == [people["a0"], people["b0"]]  # a at 0.111, b at 0.120
    assert face.candidates[0].distance < face.candidates[1].distance
    assert [people[c.face_id] for c in face.candidates] == [c.person for c in face.candidates]
    (report,) = unsure.face_reports("photo-q")
    assert report["unguided"] == "not_verified"
    assert report["candidates"] == [c.to_json() for c in face.candidates]
    sure = _plan(tmp_path, with_ladders=True).faces["q"]  # verified at its resolution: guided
    assert sure.exemplars and sure.unguided is None
    assert _plan(tmp_path, with_ladders=True).face_reports("photo-q")[0]["candidates"] == []


def test_the_guard_keeping_the_original_makes_a_guided_face_unguided(tmp_path):
    from albumfix.stages.outcomes import PhotoReport

    plan = _plan(tmp_path, with_ladders=True)
    report = PhotoReport("q.jpg", faces=plan.face_reports("photo-q"))
    plan.attach_restored(report, {"q": {"exemplar": "a0", "guided": True, "strength": 0.0,
                                        "guard": {"strength": 0.0, "reason": "at strength 0.3: identity; original face kept"}}})
    (face,) = report.faces
    assert face["unguided"] == "guard_rejected"
    assert face["candidates"] and face["candidates"][0]["face"].startswith("a")
    lowered = PhotoReport("q.jpg", faces=plan.face_reports("photo-q"))
    plan.attach_restored(lowered, {"q": {"exemplar": "a0", "guided": True, "strength": 0.3}})
    assert lowered.faces[0]["unguided"] is None


def test_verification_offers_the_nearest_people_with_their_nearest_face_whatever_it_decides():
    from albumfix.people.verify import verify_people

    rng = np.random.default_rng(5)
    query, faces, photos, people = _album(rng, 0.09, 0.0905)  # too near to tell apart
    (v,) = verify_people(query[None], ["q"], faces, photos, people, ranked=1)
    assert v.person is None and [c.person for c in v.candidates] == ["A"]
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert [c.person for c in v.candidates] == ["A", "B"]
    distances = 1.0 - faces @ query
    for c in v.candidates:
        own = [i for i, p in enumerate(people) if p == c.person]
        assert c.face == own[int(np.argmin(distances[own]))]


def test_review_page_shows_every_unguided_face_with_its_cause_candidates_and_commands(album_copy, reviewed):
    out, data = reviewed
    faces = faces_of(data)
    unguided = {fid: f for fid, (_, f) in faces.items() if f["action"] == "restore" and f["unguided"]}
    guided = {fid: f for fid, (_, f) in faces.items() if f["action"] == "restore" and not f["unguided"]}
    assert {f["unguided"] for f in unguided.values()} == {"not_verified", "no_better_photo"}
    assert {faces[fid][0] for fid in guided} == {"1998/old print.jpg"}
    page = _ReviewPage()
    page.feed((out / "review.html").read_text(encoding="utf-8"))
    items = {item["id"].removeprefix("face-"): item for item in page.items}
    assert [i["id"] for i in page.items if "unguided" in i["class"]] == [f"face-{fid}" for fid in unguided]
    assert [i["id"] for i in page.items if "guided" in i["class"].split()] == [f"face-{fid}" for fid in guided]
    person_of = {fid: f["person"] for fid, (_, f) in faces.items()}
    podium_person = next(f["person"] for path, f in faces.values() if path == "2009/podium.jpg")
    for fid, face in unguided.items():
        item = items[fid]
        assert item["cause"] == face["unguided"] and CAUSES[face["unguided"]][0] in item["text"]
        assert faces[fid][0] in item["text"]
        candidates = face["candidates"]
        if face["unguided"] == "not_verified":  # the group print: the person of the 2009 photos
            assert [c["person"] for c in candidates] == [podium_person]
            assert all(faces[c["face"]][0] != faces[fid][0] for c in candidates)  # from another photo
            assert all(person_of[c["face"]] == c["person"] for c in candidates)
        else:
            assert candidates == [] and "nobody to offer" in item["text"]
        assert item["commands"] == [confirm_command(album_copy, out, fid, c["person"]) for c in candidates]
        assert [f"{c['distance']:.3f}" in item["text"] for c in candidates] == [True] * len(candidates)
        shown = [(out / unquote(img["src"])).resolve() for img in item["images"]]
        assert len(shown) == 1 + len(candidates) and all(path.is_file() for path in shown)
        assert shown[0].name.startswith(fid)  # the face itself, then each candidate's face
        assert [p.name.split("-")[0] for p in shown[1:]] == [c["face"].split("-")[0] for c in candidates]
    for fid, face in guided.items():
        item = items[fid]
        assert face["restored"]["exemplar"] in item["text"]
        assert item["commands"] == [shlex.join(["albumfix", "people", "split", str(album_copy), face["person"],
                                                fid, "-o", str(out)])]
        (strip,) = item["images"]
        assert (out / unquote(strip["src"])).is_file()
    assert page.commands == [shlex.join(["albumfix", "people", "apply", str(album_copy), str(out / DECISIONS),
                                         "-o", str(out)])]
    assert DECISIONS in page.links
    assert "review.html" in (out / "report.html").read_text(encoding="utf-8")


def test_review_command_prints_the_items_and_their_commands(album_copy, analysed_index, reviewed, tmp_path):
    out, data = reviewed
    text = run_cli("review", str(album_copy), "-o", str(out))
    assert text.returncode == 0, text.stderr
    unverified = [(fid, f) for fid, (_, f) in faces_of(data).items() if f["unguided"] == "not_verified"]
    for fid, face in unverified:
        assert confirm_command(album_copy, out, fid, face["candidates"][0]["person"]) in text.stdout
    as_json = json.loads(run_cli("review", str(album_copy), "-o", str(out), "--json").stdout)
    assert as_json == json.loads((out / ".albumfix" / "review.json").read_text())
    assert [u["face"] for u in as_json["unguided"]] == [fid for fid, (_, f) in faces_of(data).items() if f["unguided"]]
    scanned = seeded_output(analysed_index, tmp_path / "scanned")  # an index, no restore yet
    missing = run_cli("review", str(album_copy), "-o", str(scanned))
    assert missing.returncode == 2 and "albumfix restore" in missing.stderr


def test_decisions_file_lists_each_candidate_commented_out_and_parses_back():
    run = {"album": "/a/album", "output": "/a/album-restored", "people": [{"id": "P", "name": "Ann"}],
           "photos": [{"path": "x.jpg", "faces": [
               {"id": "f-0", "action": "restore", "unguided": "guard_rejected", "reason": "degraded",
                "person": "P", "exemplars": [{"face": "g-0", "distance": 0.1}],
                "restored": {"exemplar": "g-0", "strength": 0.0, "guard": {"reason": "identity 0.2 > 0.1; original face kept"}},
                "candidates": [{"person": "P", "distance": 0.05, "face": "g-0"}, {"person": "Q", "distance": 0.09, "face": "h-0"}]},
               {"id": "f-1", "action": "restore", "unguided": "no_better_photo", "reason": "r", "person": "R",
                "exemplars": [], "candidates": []}]}]}
    review = build_review(run, {"g-0": "y.jpg"}, {})
    (rejected, lonely) = review.unguided
    assert rejected.detail == "identity 0.2 > 0.1; original face kept" and rejected.candidates[0].name == "Ann"
    assert rejected.candidates[0].command == "albumfix people confirm /a/album f-0 P"  # default OUT: no -o
    assert review.apply == "albumfix people apply /a/album /a/album-restored/review-decisions.txt"
    text = render_decisions(review)
    assert parse_decisions(text) == []  # everything commented out
    assert "f-1" not in text  # nothing to offer
    chosen = text.replace("# confirm f-0 Q", "confirm f-0 Q")
    assert parse_decisions(chosen) == [("f-0", "Q")]
    page = render_review(review)
    assert "no picture" in page and "Rejected by the guard" in page and "Ann (P)" in page
    with pytest.raises(PeopleEditError, match="line 2"):
        parse_decisions("# fine\nconfirm f-0\n")


def test_people_apply_confirms_every_uncommented_line_or_none(album_copy, reviewed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reviewed[0], out)
    decisions = (out / DECISIONS).read_text(encoding="utf-8")
    offered = parse_decisions(decisions.replace("# confirm ", "confirm "))
    assert len(offered) == 3  # the three faces of the group print
    bad = tmp_path / "bad.txt"
    bad.write_text(f"confirm {offered[0][0]} {offered[0][1]}\nconfirm no-such-face {offered[0][1]}\n")
    refused = run_cli("people", "apply", str(album_copy), str(bad), "-o", str(out))
    assert refused.returncode == 2 and "no-such-face" in refused.stderr

    def person_of(face: str) -> str:
        people = json.loads(run_cli("people", str(album_copy), "-o", str(out), "--json").stdout)
        return next(p["id"] for p in people if face in p["faces"])

    assert person_of(offered[0][0]) != offered[0][1]  # all or none: the good line was not applied either
    (out / DECISIONS).write_text(decisions.replace(f"# confirm {offered[0][0]}", f"confirm {offered[0][0]}"))
    applied = run_cli("people", "apply", str(album_copy), str(out / DECISIONS), "-o", str(out))
    assert applied.returncode == 0, applied.stderr
    assert person_of(offered[0][0]) == offered[0][1] and person_of(offered[1][0]) != offered[1][1]


def test_a_confirmed_face_is_guided_next_run_which_redoes_only_its_photo(album_copy, reviewed, random_weights,
                                                                        tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(reviewed[0], out)
    old = next(f for path, f in faces_of(reviewed[1]).values() if path == OLD_PRINT)
    assert old["exemplars"] and old["unguided"] is None
    split = run_cli("people", "split", str(album_copy), old["person"], old["id"], "-o", str(out))  # "not him"
    assert split.returncode == 0, split.stderr
    rerun = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--json", "-q")
    assert rerun.returncode == 0, rerun.stderr
    unguided = faces_of(json.loads(rerun.stdout))[old["id"]][1]
    assert unguided["unguided"] == "confirmed" and unguided["exemplars"] == []
    assert unguided["candidates"][0]["person"] == old["person"]  # its true person is offered first
    (item,) = [u for u in json.loads((out / ".albumfix" / "review.json").read_text())["unguided"]
               if u["face"] == old["id"]]
    words = shlex.split(item["candidates"][0]["command"])  # the page's command, run as printed
    assert words[0] == "albumfix"
    confirmed = run_cli(*words[1:])
    assert confirmed.returncode == 0, confirmed.stderr
    from albumfix.stages.restore import Restorer

    redone = []
    real_submit = Restorer.submit
    monkeypatch.setattr(Restorer, "submit", lambda self, task: redone.append(task.relpath) or real_submit(self, task))
    settings = Settings(output=out, weights=random_weights, restore="all").validate()
    after = faces_of(Pipeline(album_copy, settings).run().to_json())
    assert redone == [OLD_PRINT]
    now = after[old["id"]][1]
    assert now["person"] == old["person"] and now["person_confirmed"] and now["unguided"] is None
    assert now["restored"]["guided"] and after[now["restored"]["exemplar"]][1]["person"] == old["person"]
    guided = json.loads((out / ".albumfix" / "review.json").read_text())["guided"]
    assert old["id"] in [g["face"] for g in guided]
    unknown = run_cli("people", "confirm", str(album_copy), old["id"], "nobody", "-o", str(out))
    assert unknown.returncode == 2 and "no person 'nobody'" in unknown.stderr


def test_simulated_user_confirms_the_true_person_when_offered(album_copy, reviewed, tmp_path):
    """benchmarks/simulate_review.py on a benchmark folder made of the sample album, its faded
    print split away from its person (so unguided, its person offered first) and the group
    print's two people, each seen once (offered only someone else)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import simulate_review

    work = tmp_path / "work"
    out = work / "out-product"
    shutil.copytree(reviewed[0], out)
    old = next(f for path, f in faces_of(reviewed[1]).values() if path == OLD_PRINT)
    assert run_cli("people", "split", str(album_copy), old["person"], old["id"], "-o", str(out)).returncode == 0
    scan = run_cli("scan", str(album_copy), "-o", str(out), "--json", "-q")
    assert scan.returncode == 0, scan.stderr
    (out / ".albumfix" / "run.json").write_text(scan.stdout)
    people = {OLD_PRINT: ["obama"], "2009/podium.jpg": ["obama"], "2009/oval office.jpg": ["obama"],
              "1975/group.png": ["hopper", "collins"]}
    families = {OLD_PRINT: "aged-print", "1975/group.png": "training"}
    (work / "manifest.json").write_text(json.dumps([
        {"path": p["path"], "family": families.get(p["path"]), "truth": None, "sources": [],
         "faces": [{"person": who, "landmarks": [], "box": f["box"]} for who, f in zip(people.get(p["path"], []), p["faces"])]}
        for p in json.loads(scan.stdout)["photos"]]))
    report = simulate_review.simulate(work)
    assert report["confirmed"] == 1 and list(report["families"]) == ["training", "aged-print", "all"]
    figures = report["families"]["all"]
    assert {k: figures[k] for k in ("faces", "detected", "auto_guided", "on_page", "offered", "guided_after",
                                    "right_after")} == {"faces": 3, "detected": 3, "auto_guided": 0, "on_page": 3,
                                                        "offered": 1, "guided_after": 1, "right_after": 1}
    assert figures["causes"] == {"confirmed": 1, "not_verified": 2} and figures["offered_at"] == [1, 0, 0]
    assert "guided after the confirmations" in simulate_review.table(report)
