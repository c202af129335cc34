"""The command line: help without heavy imports, env vars and config files, people edits,
models listing, doctor, and the stdout/stderr split."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from albumfix.settings import SettingsError, load_settings
from conftest import REPO, cli_command, run_cli, seeded_output


def test_help_does_not_import_torch_or_backends():
    code = ("import sys; from albumfix import cli; "
            "print(sorted(m for m in ('torch', 'dlib', 'insightface', 'onnxruntime', 'face_alignment') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
    help_text = run_cli("restore", "--help").stdout
    for option in ("--output", "--overwrite", "--dry-run", "--json", "--restore", "--min-face-size",
                   "--device", "--strength", "--save-faces", "ALBUMFIX_DEVICE"):
        assert option in help_text


def test_settings_precedence_flag_over_config_over_default(tmp_path):
    config = tmp_path / "albumfix.toml"
    config.write_text('device = "cpu"\nstrength = 0.5\nmin_face_size = 40\n')
    s = load_settings(config, {"strength": 0.8, "device": None})
    assert (s.device, s.strength, s.min_face_size, s.batch_size) == ("cpu", 0.8, 40, 8)
    config.write_text('colour = "blue"\n')
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(config, {})
    with pytest.raises(SettingsError, match="--strength"):
        load_settings(None, {"strength": 3.0})


def test_env_var_sets_an_option(album_copy, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("ALBUMFIX_OVERWRITE", "sometimes")
    bad = subprocess.run([sys.executable, "-m", "albumfix.cli", "restore", str(album_copy), "-o", str(out)],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "--overwrite" in bad.stderr


def test_people_commands_edit_and_persist(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    scan = run_cli("scan", str(album_copy), "-o", str(out), "--json", "-q")
    assert scan.returncode == 0, scan.stderr
    people = json.loads(run_cli("people", str(album_copy), "-o", str(out), "--json").stdout)
    assert people and all({"id", "name", "faces", "photos"} <= set(p) for p in people)
    photo_of = {f: path for p in people for f, path in zip(p["faces"], p["photos"])}
    assert sorted(set(photo_of.values())) == ["1975/group.png", "1998/old print.jpg", "2009/oval office.jpg",
                                              "2009/podium.jpg"]
    text = run_cli("people", str(album_copy), "-o", str(out)).stdout
    assert all(f"{face} ({path})" in text for face, path in photo_of.items())
    biggest = max(people, key=lambda p: len(p["faces"]))
    others = [p for p in people if p is not biggest]

    named = run_cli("people", "name", str(album_copy), biggest["id"], "Grandpa", "-o", str(out))
    assert named.returncode == 0, named.stderr
    merged = run_cli("people", "merge", str(album_copy), biggest["id"], others[0]["id"], "-o", str(out))
    assert merged.returncode == 0, merged.stderr
    moved = others[0]["faces"][0]
    split = run_cli("people", "split", str(album_copy), biggest["id"], moved, "-o", str(out))
    assert split.returncode == 0, split.stderr
    excluded_face = biggest["faces"][-1]
    assert run_cli("people", "exclude", str(album_copy), excluded_face, "-o", str(out)).returncode == 0

    # a new scan (re-grouping) keeps every manual decision
    rescan = json.loads(run_cli("scan", str(album_copy), "-o", str(out), "--json", "-q").stdout)
    after = {p["id"]: p for p in rescan["people"]}
    assert after[biggest["id"]]["name"] == "Grandpa"
    assert moved not in after[biggest["id"]]["faces"]
    assert any(moved in p["faces"] for pid, p in after.items() if pid != biggest["id"])
    assert all(excluded_face not in p["faces"] for p in after.values())

    unknown = run_cli("people", "name", str(album_copy), "no-such-person", "X", "-o", str(out))
    assert unknown.returncode == 2 and "no person" in unknown.stderr


def test_faded_print_is_verified_guided_and_never_guides_and_the_user_still_decides(album_copy, analysed_index,
                                                                                   tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")

    def faces() -> dict[str, dict]:
        scan = run_cli("scan", str(album_copy), "-o", str(out), "--json", "-q")
        assert scan.returncode == 0, scan.stderr
        return {p["path"]: f for p in json.loads(scan.stdout)["photos"] for f in p["faces"]}

    sharp_ids = lambda fs: ([fs["2009/podium.jpg"]["id"]], [fs["2009/oval office.jpg"]["id"]])  # noqa: E731
    before = faces()
    old, sharp = before["1998/old print.jpg"], before["2009/podium.jpg"]
    # the faded print is too far from its own sharp photos for the grouping threshold, but the
    # album-wide margin rule verifies it against them: it joins its person and is guided
    assert old["action"] == "restore" and not old["person_confirmed"]
    assert old["person"] == sharp["person"]
    assert [e["face"] for e in old["exemplars"]][:1] in sharp_ids(before)
    # a damaged face never guides another face
    assert all(e["face"] != old["id"] for f in before.values() for e in f["exemplars"])
    # the user says it is someone else: it is restored without guidance
    split = run_cli("people", "split", str(album_copy), old["person"], old["id"], "-o", str(out))
    assert split.returncode == 0, split.stderr
    after = faces()["1998/old print.jpg"]
    assert after["person_confirmed"] and after["person"] != sharp["person"] and after["exemplars"] == []
    assert "people confirm" in after["reason"]
    # and merged back, it is guided by that person's photos again
    merged = run_cli("people", "merge", str(album_copy), sharp["person"], after["person"], "-o", str(out))
    assert merged.returncode == 0, merged.stderr
    final = faces()
    old = final["1998/old print.jpg"]
    assert old["person_confirmed"] and old["person"] == sharp["person"]
    assert [e["face"] for e in old["exemplars"]][:1] in sharp_ids(final)


def test_two_exemplars_each_guide_a_restoration_and_are_fused(album_copy, analysed_index, tmp_path):
    def restore(k: int) -> tuple[dict, bytes]:  # the shipped weights: random ones hardly read the exemplar
        out = seeded_output(analysed_index, tmp_path / f"k{k}")
        run = run_cli("restore", str(album_copy), "-o", str(out), "--exemplars", str(k), "--no-guard",
                      "--json", "-q")
        assert run.returncode == 0, run.stderr
        photo = next(p for p in json.loads(run.stdout)["photos"] if p["path"] == "1998/old print.jpg")
        return photo["faces"][0], (out / "1998" / "old print.jpg").read_bytes()

    one, one_pixels = restore(1)
    two, two_pixels = restore(2)
    assert [e["face"] for e in two["exemplars"]][:1] == [e["face"] for e in one["exemplars"]]
    assert len(two["exemplars"]) == 2 and "fused" not in one["restored"]
    assert two["restored"]["fused"] == [e["face"] for e in two["exemplars"]]
    assert two["restored"]["exemplar"] == one["restored"]["exemplar"] and two["restored"]["guided"]
    assert two_pixels != one_pixels  # the second exemplar's restoration is part of the output


def doctor_json(home) -> dict:
    """`albumfix doctor --json` with HOME=home (where it looks for ~/.insightface)."""
    env = dict(os.environ, HOME=str(home))
    env.pop("ALBUMFIX_HOME", None)
    result = subprocess.run(cli_command("doctor", "--json"), capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_models_and_doctor_json(tmp_path):
    from test_backends import write_pack  # a tiny insightface pack in the real file format

    models = run_cli("models", "list", "--json")
    assert models.returncode == 0, models.stderr
    names = [m["config"] for m in json.loads(models.stdout)]
    assert "asffnet512" in names and "albumfix-s128" in names
    home = tmp_path / "home"
    pack = home / ".insightface" / "models" / "buffalo_l"
    home.mkdir()
    doctor = doctor_json(home)
    assert doctor["backends"]["dlib"]["ok"] is True
    assert set(doctor) >= {"device", "backends", "weights", "versions"}
    # no insightface pack: reported missing, with the folder to put it in
    missing = doctor["backends"]["insightface"]
    assert missing["ok"] is False and str(pack) in missing["detail"] and "det_10g.onnx" in missing["detail"]
    # the pack in ~/.insightface: reported usable, from that folder
    write_pack(pack)
    found = doctor_json(home)["backends"]["insightface"]
    assert found["ok"] is True and str(pack) in found["detail"]


def test_json_goes_to_stdout_and_logs_to_stderr(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    result = run_cli("scan", str(album_copy), "-o", str(out), "--json")
    data = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert data["summary"]["photos"] == 5
    assert "albumfix: INFO" in result.stderr
    assert "\x1b[" not in result.stderr  # no colour codes when stderr is not a terminal
