"""Face quality measures and decisions, on a real face (skimage's astronaut, dlib landmarks) and
on landmark sets projected from insightface's 3-D 68-point mean face."""
from __future__ import annotations

import importlib.util
import pickle
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from albumfix.faces.analyzer import DetectedFace
from conftest import SAMPLE_ALBUM
from albumfix.faces.backends import create_analyzer
from albumfix.faces.quality import (
    FaceQuality,
    assess_face,
    blockiness,
    check_landmarks,
    decide_action,
    estimate_yaw,
    noise_sigma,
)


@pytest.fixture(scope="module")
def astronaut_face(tmp_path_factory) -> tuple[np.ndarray, DetectedFace]:
    rgb = skimage.data.astronaut()
    analyzer = create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path_factory.mktemp("none")))
    return rgb, max(analyzer.analyse(rgb), key=lambda f: f.score)


def with_landmarks(face: DetectedFace, landmarks: np.ndarray) -> DetectedFace:
    return replace(face, landmarks=np.asarray(landmarks, dtype=np.float32))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def mean_face_3d() -> np.ndarray:
    """(68, 3) insightface's mean face (x right, y down, z towards the camera), package data."""
    spec = importlib.util.find_spec("insightface")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "objects" / "meanshape_68.pkl"
    with path.open("rb") as fh:
        return np.asarray(pickle.load(fh), dtype=np.float64)


def posed(yaw: float, pitch: float = 0.0, roll: float = 0.0, size: float = 120.0) -> np.ndarray:
    """(68, 2) photo px of the mean face turned by yaw (about the vertical axis), then pitch, roll."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (mean_face_3d() @ (rz @ rx @ ry).T)[:, :2] * size + 250.0


def test_sharp_face_scores_above_its_degraded_versions(astronaut_face):
    rgb, face = astronaut_face
    sharp = assess_face(rgb, face)
    blurred = assess_face(cv2.GaussianBlur(rgb, (0, 0), 2.0), face)
    noisy = assess_face(np.clip(rgb + np.random.default_rng(0).normal(0, 12, rgb.shape), 0, 255).astype(np.uint8), face)
    blocky = assess_face(jpeg(rgb, 10), face)
    assert sharp.landmarks_ok and abs(sharp.yaw_deg) < 15 and 35 < sharp.interocular_px < 55
    assert blurred.sharpness < 0.8 * sharp.sharpness
    assert noisy.noise > 3 * sharp.noise
    assert blocky.blockiness > sharp.blockiness + 0.2
    for worse in (blurred, noisy, blocky):
        assert 0.0 <= worse.score < sharp.score <= 1.0


def test_tiny_face_is_skipped(astronaut_face):
    rgb, face = astronaut_face
    small = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
    q = assess_face(small, with_landmarks(face, (face.landmarks + 0.5) / 4 - 0.5))
    assert q.interocular_px == pytest.approx(assess_face(rgb, face).interocular_px / 4, rel=1e-4)
    d = decide_action(q, min_face_size=16)
    assert d.action == "skip" and not d.exemplar_eligible and "too small" in d.reason
    assert "too small" not in decide_action(q, min_face_size=8).reason


def test_face_cut_by_the_photo_border_is_measured(astronaut_face):
    """A face cut through the middle by the photo's edge (x = 215 of the box 175-265) is measured
    as the whole face is: same geometry, sharpness and detail within 10 %, the edge read as
    neither detail, noise nor JPEG blocks; and its damaged versions still score below it."""
    rgb, face = astronaut_face
    whole = assess_face(rgb, face)
    cut_face = with_landmarks(face, face.landmarks - [215, 0])
    cut = lambda image: assess_face(image[:, 215:], cut_face)  # noqa: E731
    q = cut(rgb)
    assert q.landmarks_ok and q.interocular_px == pytest.approx(whole.interocular_px)
    assert q.yaw_deg == pytest.approx(whole.yaw_deg)
    assert q.sharpness == pytest.approx(whole.sharpness, rel=0.1) and q.detail == pytest.approx(whole.detail, rel=0.1)
    assert q.blockiness < whole.blockiness + 0.05 and q.noise < 1.2 * whole.noise
    blurred = cut(cv2.GaussianBlur(rgb, (0, 0), 2.0))
    noisy = cut(np.clip(rgb + np.random.default_rng(0).normal(0, 12, rgb.shape), 0, 255).astype(np.uint8))
    assert blurred.sharpness < 0.8 * q.sharpness and noisy.noise > 3 * q.noise
    for worse in (blurred, noisy):
        assert 0.0 <= worse.score < q.score <= 1.0


@pytest.mark.parametrize("roll", [0.0, 25.0, -70.0])
@pytest.mark.parametrize("yaw", [-60.0, -20.0, 0.0, 30.0, 60.0])
def test_yaw_from_landmarks_ignores_roll(yaw, roll):
    assert estimate_yaw(posed(yaw, roll=roll)) == pytest.approx(yaw, abs=5.0)


def test_strongly_turned_face_is_skipped(astronaut_face):
    rgb, face = astronaut_face
    canvas = np.full((500, 500, 3), 128, dtype=np.uint8)
    q = assess_face(canvas, with_landmarks(face, posed(62.0, pitch=5.0, roll=10.0)))
    d = decide_action(q, max_yaw_deg=45)
    assert d.action == "skip" and "yaw" in d.reason
    frontal = assess_face(canvas, with_landmarks(face, posed(5.0, pitch=5.0, roll=10.0)))
    assert frontal.landmarks_ok and "yaw" not in decide_action(frontal).reason


def test_implausible_landmarks_are_flagged(astronaut_face):
    rgb, face = astronaut_face
    upside_down = posed(0.0) * [1, -1] + [0, 500]  # mouth above the eyes, mirror image
    ok, problem, _ = check_landmarks(upside_down)
    assert not ok and problem
    collapsed = np.full((68, 2), 200.0) + np.random.default_rng(0).normal(0, 0.5, (68, 2))
    assert not check_landmarks(collapsed)[0]
    assert check_landmarks(face.landmarks)[0] and check_landmarks(posed(20.0, pitch=-10.0, roll=30.0))[0]
    d = decide_action(assess_face(rgb, with_landmarks(face, upside_down)))
    assert d.action == "skip" and "landmarks" in d.reason


def test_noise_estimate_tracks_added_noise():
    ys, xs = np.mgrid[:160, :160].astype(np.float32)
    scene = 60 + 0.5 * xs + 40 * np.sin(ys / 15.0)
    rng = np.random.default_rng(2)
    for sigma in (2.0, 5.0, 10.0):
        assert noise_sigma(scene + rng.normal(0, sigma, scene.shape).astype(np.float32)) == pytest.approx(sigma, rel=0.15)
    assert noise_sigma(scene) < 0.5


def test_blockiness_finds_jpeg_grid_at_any_offset():
    rgb = skimage.data.astronaut()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    coded = cv2.cvtColor(jpeg(rgb, 12), cv2.COLOR_RGB2GRAY).astype(np.float32)
    clean = blockiness(gray[60:200, 150:290].astype(np.float32))
    assert clean < 0.15
    for dy, dx in ((0, 0), (3, 5), (7, 1)):
        assert blockiness(coded[60 + dy : 200 + dy, 150 + dx : 290 + dx]) > clean + 0.3


def quality(score: float, iod: float = 60.0) -> FaceQuality:
    return FaceQuality(iod, 0.5, 1.0, 0.05, 3.0, 1.0, True, "", score)


def test_restore_modes():
    good, bad = quality(0.95), quality(0.1)
    assert decide_action(good, "auto").action == "exemplar" and decide_action(good, "auto").exemplar_eligible
    d = decide_action(bad, "auto")
    assert d.action == "restore" and not d.exemplar_eligible and "degraded" in d.reason
    d = decide_action(good, "all")
    assert d.action == "restore" and d.exemplar_eligible
    assert decide_action(bad, "none").action == "skip" and decide_action(good, "none").action == "exemplar"
    small_good = quality(0.95, iod=20.0)  # fine but too small to guide others
    assert decide_action(small_good, "auto").action == "skip" and not decide_action(small_good).exemplar_eligible
    with pytest.raises(ValueError):
        decide_action(good, "some")


def test_an_exemplar_must_be_clearly_better_than_the_face_it_guides():
    from dataclasses import replace

    from albumfix.faces.quality import MIN_EXEMPLAR_DETAIL, FaceQuality, clearly_better

    modest = FaceQuality(interocular_px=40, sharpness=0.40, noise=2.0, blockiness=0.1, yaw_deg=0,
                         landmark_spread=1.0, landmarks_ok=True, landmark_problem="", score=0.2, detail=0.4)
    damaged = replace(modest, sharpness=0.30, score=0.05, detail=0.1)
    assert clearly_better(modest, damaged)
    assert not clearly_better(damaged, modest)  # a damaged face never guides a better one
    assert not clearly_better(modest, modest)  # nor an equal one
    assert not clearly_better(replace(modest, detail=0.14), replace(damaged, detail=0.05))  # below the floor
    assert clearly_better(replace(modest, detail=MIN_EXEMPLAR_DETAIL), replace(damaged, detail=0.05))
    assert not clearly_better(replace(modest, interocular_px=25), damaged)  # much smaller


def test_edge_detail_reads_resolution_not_grain_or_jpeg_blocks():
    """A real face: its detail falls when it is downscaled or blurred, and noise, film grain or
    JPEG blocks added to the damaged face do not bring it back."""
    from albumfix.album.imageio import decode
    from albumfix.degrade import _jpeg
    from albumfix.faces.backends import create_analyzer
    from albumfix.faces.quality import MIN_EXEMPLAR_DETAIL, assess_face

    rgb = decode(SAMPLE_ALBUM / "2009/oval office.jpg").rgb8()
    rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    face = create_analyzer("dlib", "dlib", cnn_fallback=False).analyse(rgb)[0]
    detail = lambda img: assess_face(img, face).detail  # noqa: E731
    h, w = rgb.shape[:2]
    small = cv2.resize(cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    noisy = np.clip(small + rng.normal(0, 8, small.shape), 0, 255).astype(np.uint8)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.7)
    grainy = np.clip(small + 40 * grain[..., None], 0, 255).astype(np.uint8)
    sharp = detail(rgb)
    assert sharp > MIN_EXEMPLAR_DETAIL
    for damaged in (small, cv2.GaussianBlur(rgb, (0, 0), 2.5), noisy, grainy, _jpeg(small, 20)):
        assert detail(damaged) < MIN_EXEMPLAR_DETAIL < sharp
    noisy_sharp = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
    assert detail(noisy_sharp) > MIN_EXEMPLAR_DETAIL  # noise does not hide real detail either
