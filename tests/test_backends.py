"""Backends: dlib on a real photo; insightface and FAN loading paths end to end with tiny models
written here in the real file formats (ONNX graphs, a torch state dict); missing-file errors; the
device each part runs on (a GPU stood in by onnxruntime's and torch's availability queries)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import skimage.data
from onnx import TensorProto, helper, numpy_helper

from albumfix.faces.analyzer import BackendUnavailable, box_iou as iou
from conftest import SAMPLE_ALBUM, run_cli
from albumfix.faces.backends import create_analyzer, fan_backend, gpu_index
from albumfix.faces.backends.fan_backend import FAN_FILE, FanCrop, decode_heatmaps
from albumfix.faces.landmarks import mirror_landmarks
from albumfix.faces.backends.insightface_backend import onnx_providers, similarity_matrix

ASTRONAUT_FACE = (175.0, 76.0, 265.0, 166.0)  # where a person sees the face in skimage's astronaut


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def dlib_analyzer(tmp_path_factory):
    return create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path_factory.mktemp("empty")))


# ------------------------------------------------------------------ dlib on a real face
def test_dlib_finds_the_astronaut_with_landmarks_and_unit_embedding(dlib_analyzer, astronaut):
    faces = dlib_analyzer.analyse(astronaut)
    best = max(faces, key=lambda f: f.score)
    assert iou(best.box, ASTRONAUT_FACE) > 0.8
    assert best.detector == "dlib_hog" and best.landmarker == "dlib" and best.embedder == "dlib"
    lm = best.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    left_eye, right_eye, mouth = lm[36:42].mean(0), lm[42:48].mean(0), lm[48:68].mean(0)
    assert left_eye[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < lm[30, 1] < mouth[1] < lm[8, 1]
    assert best.embedding.shape == (128,) and abs(np.linalg.norm(best.embedding) - 1.0) < 1e-5
    assert dlib_analyzer.embedder == "dlib"


def damaged_two_person_photo() -> tuple[np.ndarray, int]:
    """Two real faces side by side, each half damaged (a web thumbnail left, the training
    degradation right, fixed seeds) so that the first detection pass finds only the left face.
    Returns (photo (H, W, 3) uint8, x where the right half starts)."""
    from albumfix.album.imageio import decode
    from albumfix.degrade import apply_photo_damage, sample_photo_damage

    def half(name: str, family: str, seed: int) -> np.ndarray:
        rgb = decode(SAMPLE_ALBUM / "2009" / name).rgb8()
        rgb = cv2.resize(rgb, (250, 250 * rgb.shape[0] // rgb.shape[1]), interpolation=cv2.INTER_AREA)[:250]
        return apply_photo_damage(cv2.resize(rgb, (250, 250)), sample_photo_damage(np.random.default_rng(seed), family))[0]

    return np.concatenate([half("podium.jpg", "web-thumbnail", 0), half("oval office.jpg", "training", 7)], axis=1), 250


def test_a_noisy_damaged_face_is_found_on_the_denoised_copy_when_every_other_hog_pass_misses():
    from albumfix.album.imageio import decode
    from albumfix.degrade import apply_photo_damage, sample_photo_damage
    from albumfix.faces.backends.dlib_backend import DlibModels, denoised, equalised

    detector = DlibModels.load().detector(cnn_fallback=False)
    rgb = decode(SAMPLE_ALBUM / "2009" / "podium.jpg").rgb8()
    rgb = cv2.resize(rgb, (250, 250 * rgb.shape[0] // rgb.shape[1]), interpolation=cv2.INTER_AREA)
    damaged = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(36), "training"))[0]
    assert not (detector.detect_hog(damaged) or detector.detect_hog(damaged, 2)
                or detector.detect_hog(equalised(damaged), 2))
    found = detector.detect(damaged)
    truth = detector.detect(rgb)
    assert len(found) == 1 and len(truth) == 1 and iou(found[0].box, truth[0].box) >= 0.5
    assert found[0].box == detector.detect_hog(denoised(damaged), 2)[0].box


def test_dlib_search_finds_the_face_a_damaged_photo_hid_from_the_first_pass(dlib_analyzer):
    """dlib's own passes (the MTCNN pass off): the search finds what HOG's first pass missed.
    With the MTCNN pass (the default analyzer), the first pass already finds both faces."""
    from albumfix.faces.quality import assess_face, lacks_detail

    photo, split_x = damaged_two_person_photo()
    both = dlib_analyzer.analyse(photo)
    assert sorted(f.detector for f in both) == ["dlib_hog", "mtcnn"]
    assert sorted(f.box[0] >= split_x - 10 for f in both) == [False, True]
    dlib_analyzer = create_analyzer(faces="dlib", landmarks="dlib", device="cpu")
    dlib_analyzer.detector.small_faces = None
    faces = dlib_analyzer.analyse(photo)
    assert len(faces) == 1 and faces[0].box[2] <= split_x and lacks_detail(assess_face(photo, faces[0]).detail)
    more = dlib_analyzer.search_more(photo, faces)
    assert len(more) == 1 and more[0].box[0] >= split_x - 10 and more[0].landmarks.shape == (68, 2)
    assert more[0].embedding is None  # located only; `describe` embeds
    (described,) = dlib_analyzer.describe([(photo, more)])
    assert described[0].embedding.shape == (128,) and described[0].box == more[0].box
    assert dlib_analyzer.search_more(photo, faces + more) == []  # nothing found twice


def test_scan_searches_a_damaged_photo_again_and_stores_both_faces(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    photo, split_x = damaged_two_person_photo()
    cv2.imwrite(str(album / "pair.png"), photo[..., ::-1])
    result = run_cli("scan", str(album), "-o", str(tmp_path / "out"), "--json", "-q")
    assert result.returncode == 0, result.stderr
    faces = json.loads(result.stdout)["photos"][0]["faces"]
    assert sorted(f["box"][0] >= split_x - 10 for f in faces) == [False, True]


def turned_astronaut(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """skimage's astronaut turned 50 degrees, 360 x 360: a face HOG misses and the CNN finds.
    Returns (photo (360, 360, 3) uint8, the face centre (x, y) px in it)."""
    rot = cv2.getRotationMatrix2D((256.0, 256.0), 50.0, 1.0)
    turned = cv2.warpAffine(astronaut, rot, (512, 512), borderMode=cv2.BORDER_REFLECT)
    centre = cv2.transform(np.array([[[220.0, 121.0]]]), rot)[0, 0] * 360 / 512
    return cv2.resize(turned, (360, 360), interpolation=cv2.INTER_AREA), centre


def test_a_blotchy_noisy_face_is_found_by_the_cnn_on_the_non_local_means_copy():
    """Training damage (seed 11) leaves noise enlarged into blotches: every HOG pass and the CNN
    on the photo miss the face; the CNN on the non-local-means copy finds it where the clean
    photo has it."""
    from albumfix.album.imageio import decode
    from albumfix.degrade import apply_photo_damage, sample_photo_damage
    from albumfix.faces.backends.dlib_backend import DENOISED_CNN_MIN_SCORE, DlibModels, nl_means_denoised

    detector = DlibModels.load().detector()
    rgb = decode(SAMPLE_ALBUM / "2009" / "podium.jpg").rgb8()
    rgb = cv2.resize(rgb, (250, 250 * rgb.shape[0] // rgb.shape[1]), interpolation=cv2.INTER_AREA)
    damaged = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(11), "training"))[0]
    assert not (detector.detect_hog(damaged) or any(detector.detect_hog(v, 2) for v in detector._retries(damaged))
                or detector.detect_cnn(damaged))
    found = detector.detect(damaged)
    (truth,) = detector.detect(rgb)
    assert len(found) == 1 and found[0].detector == "dlib_cnn" and found[0].score >= DENOISED_CNN_MIN_SCORE
    assert iou(found[0].box, truth.box) >= 0.5
    assert found[0].box == detector.detect_cnn(damaged, nl_means_denoised)[0].box


def test_a_face_found_only_on_the_denoised_copy_needs_the_confidence_floor(monkeypatch):
    """A weak box of the denoised CNN pass (the kind a windmill gave on a real old photo) is
    dropped; the same box at the floor is kept."""
    from albumfix.faces.backends import FaceBox
    from albumfix.faces.backends.dlib_backend import DENOISED_CNN_MIN_SCORE, DlibModels

    detector = DlibModels.load().detector()
    flat = np.full((200, 200, 3), 128, np.uint8)
    for score, kept in [(DENOISED_CNN_MIN_SCORE - 0.01, 0), (DENOISED_CNN_MIN_SCORE, 1)]:
        box = FaceBox(box=(50.0, 50.0, 150.0, 150.0), score=score, keypoints=None, detector="dlib_cnn")
        monkeypatch.setattr(detector, "detect_cnn", lambda rgb, prepare=None, box=box: [] if prepare is None else [box])
        assert len(detector.detect(flat)) == kept


def test_room_for_face_sees_space_for_another_face_beside_but_not_around_a_portrait():
    from albumfix.faces.backends import FaceBox
    from albumfix.faces.backends.dlib_backend import room_for_face

    def box(x0, y0, x1, y1):
        return FaceBox(box=(x0, y0, x1, y1), score=1.0, keypoints=None, detector="dlib_hog")

    portrait = box(67, 80, 175, 187)  # an LFW photo's face: 108 px in 250 x 250
    assert not room_for_face((250, 250, 3), [portrait])
    assert room_for_face((250, 500, 3), [portrait])  # a second portrait beside it, not yet found
    assert not room_for_face((250, 500, 3), [portrait, box(317, 80, 425, 187)])  # two portraits side by side
    assert room_for_face((2000, 3000, 3), [box(100, 100, 160, 160)])  # one small face of a group
    assert not room_for_face((250, 250, 3), [])


def test_search_runs_the_cnn_where_there_is_room_and_finds_a_turned_face_hog_misses(astronaut, monkeypatch):
    """An upright face HOG finds beside the same face turned 50 degrees, which only the CNN
    finds: search returns the turned one; in a photo with no room the CNN does not run."""
    from albumfix.faces.backends.dlib_backend import DlibModels

    turned, centre = turned_astronaut(astronaut)
    upright = cv2.resize(astronaut, (360, 360), interpolation=cv2.INTER_AREA)
    photo = np.concatenate([upright, turned], axis=1)
    detector = DlibModels.load().detector(upsample=0)
    found = detector.detect_hog(photo)
    assert len(found) == 1 and found[0].box[2] <= 360
    calls = []
    real_cnn = detector.detect_cnn
    monkeypatch.setattr(detector, "detect_cnn", lambda rgb, prepare=None: calls.append(rgb.shape) or real_cnn(rgb, prepare))
    more = detector.search(photo, found)
    centre = centre + (360, 0)  # the turned face, in the right half
    assert len(calls) == 1 and len(more) == 1 and more[0].detector == "dlib_cnn"
    x0, y0, x1, y1 = more[0].box
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
    x0, y0, x1, y1 = found[0].box
    pad = 0.3 * (x1 - x0)
    close_up = upright[max(0, int(y0 - pad)):int(y1 + pad), max(0, int(x0 - pad)):int(x1 + pad)]
    face = detector.detect_hog(close_up)
    assert len(face) == 1 and detector.search(close_up, face) == [] and len(calls) == 1


def test_dlib_mirrored_photo_gives_mirrored_landmarks_and_same_identity(dlib_analyzer, astronaut):
    face = max(dlib_analyzer.analyse(astronaut), key=lambda f: f.score)
    mirrored = max(dlib_analyzer.analyse(astronaut[:, ::-1]), key=lambda f: f.score)
    expected = mirror_landmarks(face.landmarks, astronaut.shape[1])
    assert np.abs(mirrored.landmarks - expected).mean() < 3.0
    assert np.linalg.norm(face.embedding - mirrored.embedding) < 0.3  # same person: well under 0.41


def test_faces_come_sorted_top_to_bottom(dlib_analyzer, astronaut):
    canvas = np.full((420, 460, 3), 90, dtype=np.uint8)
    patch = astronaut[40:200, 140:300]
    canvas[0:160, 300:460] = patch  # upper, right
    canvas[240:400, 0:160] = patch  # lower, left
    faces = dlib_analyzer.analyse(canvas)
    assert len(faces) == 2
    assert faces[0].box[1] < faces[1].box[1] and faces[0].box[0] > faces[1].box[0]


def test_cnn_fallback_runs_only_when_hog_finds_nothing(astronaut, tmp_path):
    turned, centre = turned_astronaut(astronaut)
    hog_only = create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path), upsample=0, cnn_fallback=False)
    with_cnn = create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path), upsample=0, cnn_fallback=True)
    (by_mtcnn,) = hog_only.analyse(turned)  # the MTCNN pass finds the turned face first
    assert by_mtcnn.detector == "mtcnn" and by_mtcnn.box[0] < centre[0] < by_mtcnn.box[2]
    hog_only.detector.small_faces = with_cnn.detector.small_faces = None  # dlib's own passes
    assert hog_only.analyse(turned) == []
    found = with_cnn.analyse(turned)
    assert len(found) == 1 and found[0].detector == "dlib_cnn"
    x0, y0, x1, y1 = found[0].box
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
    assert with_cnn.analyse(astronaut)[0].detector == "dlib_hog"  # HOG hit: no CNN run


# ------------------------------------------------------------------ tiny insightface pack
DET_STRIDES = (8, 16, 32)
BOX_DIST = 2.0  # box half-size in stride units
KPS_OFFSETS = np.array([[-0.6, -0.5], [0.6, -0.5], [0.0, 0.1], [-0.5, 0.6], [0.5, 0.6]])


def tiny_scrfd() -> onnx.ModelProto:
    """SCRFD-like graph: 9 outputs (scores, box distances, 10 key-point offsets for strides
    8/16/32, 2 anchors per cell). Only stride 32 fires: score = sigmoid(20 p - 10) with p the
    cell's mean normalised brightness, so a white 32 x 32 input cell is one face."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["gray"], axes=[1], keepdims=1)]
    inits = [
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "col_shape"),
        numpy_helper.from_array(np.array([[BOX_DIST] * 4], dtype=np.float32), "dist"),
        numpy_helper.from_array(KPS_OFFSETS.reshape(1, 10).astype(np.float32), "kps"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    outputs = {"score": [], "bbox": [], "kps": []}
    for s in DET_STRIDES:
        gain, bias = (20.0, -10.0) if s == 32 else (0.0, -20.0)
        inits += [
            numpy_helper.from_array(np.array(gain, dtype=np.float32), f"gain{s}"),
            numpy_helper.from_array(np.array(bias, dtype=np.float32), f"bias{s}"),
        ]
        nodes += [
            helper.make_node("AveragePool", ["gray"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Mul", [f"pool{s}", f"gain{s}"], [f"scaled{s}"]),
            helper.make_node("Add", [f"scaled{s}", f"bias{s}"], [f"logit{s}"]),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"prob{s}"]),
            helper.make_node("Reshape", [f"prob{s}", "col_shape"], [f"col{s}"]),
            helper.make_node("Concat", [f"col{s}", f"col{s}"], [f"pair{s}"], axis=1),
            helper.make_node("Reshape", [f"pair{s}", "col_shape"], [f"score{s}"]),
            helper.make_node("Mul", [f"score{s}", "zero"], [f"nil{s}"]),
            helper.make_node("Add", [f"nil{s}", "dist"], [f"bbox{s}"]),
            helper.make_node("Add", [f"nil{s}", "kps"], [f"kps{s}"]),
        ]
        for key in outputs:
            outputs[key].append(helper.make_tensor_value_info(f"{key}{s}", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


def pooled_linear(name: str, side: int, batch, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """(B, 3, side, side) -> GlobalAveragePool -> Flatten -> x @ weight + bias: (B, D)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["proj"]),
        helper.make_node("Add", ["proj", "bias"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, side, side])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "weight"), numpy_helper.from_array(bias.astype(np.float32), "bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


def mean_face_unit() -> np.ndarray:
    """(68, 2) a plausible frontal face in [-1, 1] crop coordinates (the landmark model's unit)."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([-0.5 * np.cos(t), -0.1 + 0.55 * np.sin(t)], 1)
    brows = np.stack([np.r_[np.linspace(-0.4, -0.08, 5), np.linspace(0.08, 0.4, 5)], np.full(10, -0.32)], 1)
    nose = np.r_[np.stack([np.zeros(4), np.linspace(-0.2, 0.05, 4)], 1), np.stack([np.linspace(-0.1, 0.1, 5), np.full(5, 0.1)], 1)]
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 0.08, np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 0.03], 1)
    eyes = np.r_[ring + [-0.2, -0.2], ring + [0.2, -0.2]]
    a = np.linspace(np.pi, -np.pi, 20, endpoint=False)
    mouth = np.stack([np.cos(a) * 0.18, 0.3 + np.sin(-a) * 0.06], 1)
    return np.r_[jaw, brows, nose, eyes, mouth]


def write_pack(folder, with_landmarks: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    onnx.save(tiny_scrfd(), str(folder / "det_10g.onnx"))
    onnx.save(pooled_linear("tiny_arcface", 112, "N", rng.normal(size=(3, 512)), rng.normal(size=512)), str(folder / "w600k_r50.onnx"))
    onnx.save(pooled_linear("tiny_genderage", 96, "N", rng.normal(size=(3, 3)), np.zeros(3)), str(folder / "genderage.onnx"))
    # 106-point 2-D landmarks: 192 input, 212 outputs; sorts before w600k and must not pass for ArcFace
    onnx.save(pooled_linear("tiny_2d106det", 192, 1, np.zeros((3, 212)), np.zeros((1, 212))), str(folder / "2d106det.onnx"))
    if with_landmarks:
        values = np.zeros((1103, 3))
        values[-68:, :2] = mean_face_unit()
        onnx.save(pooled_linear("tiny_1k3d68", 192, 1, np.zeros((3, 3309)), values.reshape(1, -1)), str(folder / "1k3d68.onnx"))


def square_photo() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """320 x 240 black photo with one white 16-px square; the tiny SCRFD's expected box.

    Letterboxing scales by 2, so the square is the stride-32 cell (5, 3): anchor (160, 96) in
    detector px, box anchor +- 2 x 32, i.e. (48, 16, 112, 80) in photo px."""
    photo = np.zeros((240, 320, 3), dtype=np.uint8)
    photo[48:64, 80:96] = 255
    return photo, (48.0, 16.0, 112.0, 80.0)


def test_insightface_pack_end_to_end(tmp_path):
    write_pack(tmp_path / "models" / "buffalo_l")
    analyzer = create_analyzer(faces="insightface", models_dir=str(tmp_path))
    assert analyzer.embedder == "arcface"
    photo, box = square_photo()
    faces = analyzer.analyse(photo)
    assert len(faces) == 1
    f = faces[0]
    np.testing.assert_allclose(f.box, box, atol=1e-3)
    assert f.score > 0.99 and f.detector == "scrfd" and f.landmarker == "insightface68"
    # landmark model: crop of side 1.5 * 64 px around the box centre mapped to 192 px
    s = 192 / (1.5 * 64.0)
    expected = (mean_face_unit() + 1.0) * 96.0 / s - 96.0 / s + np.array([80.0, 48.0])
    np.testing.assert_allclose(f.landmarks, expected, atol=1e-3)
    assert f.embedding.shape == (512,) and abs(np.linalg.norm(f.embedding) - 1.0) < 1e-5
    assert f.embedding.dtype == np.float32


def test_insightface_faces_with_dlib_landmarks_and_auto_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no FAN weights
    write_pack(tmp_path / "pack", with_landmarks=False)  # a pack folder given directly
    auto = create_analyzer(faces="auto", landmarks="auto", models_dir=str(tmp_path / "pack"))
    assert auto.embedder == "arcface" and auto.landmarker.name == "dlib"
    photo, box = square_photo()
    faces = auto.analyse(photo)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2) and faces[0].landmarker == "dlib"
    assert create_analyzer(models_dir=str(tmp_path / "nothing_here")).embedder == "dlib"


def test_missing_insightface_pack_says_what_and_where(tmp_path):
    with pytest.raises(BackendUnavailable) as err:
        create_analyzer(faces="insightface", models_dir=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "models" / "buffalo_l") in msg
    assert "detection" in msg and "recognition" in msg and "det_10g.onnx" in msg
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    onnx.save(tiny_scrfd(), str(tmp_path / "models" / "buffalo_l" / "det_10g.onnx"))
    with pytest.raises(BackendUnavailable, match="no recognition model"):
        create_analyzer(faces="insightface", models_dir=str(tmp_path))
    (tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx").write_bytes(b"\x08\x07truncated download")
    with pytest.raises(BackendUnavailable, match="cannot read .*w600k_r50.onnx"):
        create_analyzer(faces="insightface", models_dir=str(tmp_path))
    assert create_analyzer(faces="auto", models_dir=str(tmp_path)).embedder == "dlib"


def test_unknown_backend_names_are_rejected():
    with pytest.raises(ValueError):
        create_analyzer(faces="opencv")
    with pytest.raises(ValueError):
        create_analyzer(landmarks="mediapipe")


def test_similarity_fit_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (5, 2))
    a = np.radians(17.0)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 12.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -4.0]])
    np.testing.assert_allclose(similarity_matrix(src, src @ m[:, :2].T + m[:, 2]), m, atol=1e-9)


# ------------------------------------------------------------------ FAN
def test_fan_heatmap_decoding_is_exact():
    hm = np.zeros((68, 64, 64), dtype=np.float32)
    cells = np.stack([np.arange(68) % 60 + 2, np.arange(68) // 2 + 10], 1)
    for i, (x, y) in enumerate(cells):
        hm[i, y, x] = 1.0
        hm[i, y, x + 1] = 0.5  # right neighbour larger -> +0.25 cell in x
    pts = decode_heatmaps(hm)
    np.testing.assert_allclose(pts, (cells + [0.25, 0.0]) * 4 + 1.5)
    crop = FanCrop.for_box((100.0, 50.0, 200.0, 150.0), 165.0)
    centre = crop.to_photo(np.array([[127.5, 127.5]]))[0]
    np.testing.assert_allclose(centre, [150.0, 100.0 - 0.12 * 100.0])


@pytest.fixture()
def tiny_fan_home(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds a 1-hourglass FAN state dict under 2D-FAN-4's name."""
    import torch
    from face_alignment.models import FAN

    torch.manual_seed(0)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(FAN(1).state_dict(), folder / FAN_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return folder


def test_fan_loads_from_the_hub_cache_and_predicts_on_dlib_boxes(tiny_fan_home, astronaut, tmp_path):
    analyzer = create_analyzer(faces="dlib", landmarks="auto", models_dir=str(tmp_path / "none"))
    assert analyzer.landmarker.name == "fan"
    analyzer.landmarker.flip = False  # one FAN pass instead of two (mirror pairs are tested with dlib)
    faces = analyzer.analyse(np.ascontiguousarray(astronaut[:300, 100:350]))  # the one real face
    assert len(faces) == 1 and faces[0].landmarker == "fan"
    for f in faces:
        assert f.landmarks.shape == (68, 2) and np.isfinite(f.landmarks).all()
        inside = cv2.transform(f.landmarks[None].astype(np.float64), FanCrop.for_box(f.box, 130.0).matrix)[0]
        assert (inside >= 0).all() and (inside <= 255).all()
        assert abs(np.linalg.norm(f.embedding) - 1.0) < 1e-5


def test_missing_fan_weights_say_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BackendUnavailable) as err:
        create_analyzer(faces="dlib", landmarks="fan", models_dir=str(tmp_path / "models"))
    msg = str(err.value)
    assert FAN_FILE in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "\n" not in msg
    assert create_analyzer(faces="dlib", landmarks="auto", models_dir=str(tmp_path / "models")).landmarker.name == "dlib"


# ------------------------------------------------------------------ devices
CUDA_AND_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_device_names_select_a_gpu_or_none():
    assert [gpu_index(d) for d in ("auto", "cuda", "cuda:3", "cpu", "mps")] == [0, 0, 3, None, None]
    for bad in ("gpu", "cuda:", "cuda:x", "tpu"):
        with pytest.raises(ValueError, match="unknown device"):
            gpu_index(bad)
    with pytest.raises(ValueError, match="unknown device"):
        create_analyzer(faces="dlib", landmarks="dlib", device="tpu")


def test_onnx_providers_follow_the_device():
    cuda = lambda index: ("CUDAExecutionProvider", {"device_id": index, "arena_extend_strategy": "kSameAsRequested"})  # noqa: E731
    assert onnx_providers("cpu", CUDA_AND_CPU) == ["CPUExecutionProvider"]
    assert onnx_providers("mps", CUDA_AND_CPU) == ["CPUExecutionProvider"]
    assert onnx_providers("cuda:1", CUDA_AND_CPU) == [cuda(1), "CPUExecutionProvider"]
    assert onnx_providers("auto", CUDA_AND_CPU) == [cuda(0), "CPUExecutionProvider"]
    assert onnx_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]  # a CPU-only onnxruntime


def test_insightface_sessions_run_on_the_requested_device(tmp_path, monkeypatch):
    """onnxruntime on a GPU machine (its CUDA provider listed): --device cpu keeps every session
    off the GPU; --device cuda:1 puts them on GPU 1."""
    import onnxruntime

    write_pack(tmp_path / "pack")
    requested = []
    real_session = onnxruntime.InferenceSession

    def recording_session(path, sess_options=None, providers=None):
        requested.append(providers)
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: CUDA_AND_CPU)
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    on_cpu = create_analyzer(faces="insightface", models_dir=str(tmp_path / "pack"), device="cpu")
    assert len(requested) == 3 and all(p == ["CPUExecutionProvider"] for p in requested)
    assert len(on_cpu.analyse(square_photo()[0])) == 1
    requested.clear()
    create_analyzer(faces="insightface", models_dir=str(tmp_path / "pack"), device="CUDA:1")
    assert len(requested) == 3 and all(p[0][1]["device_id"] == 1 for p in requested)


def test_fan_runs_on_the_requested_device(tiny_fan_home, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with 2 GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    landmarks = lambda device: create_analyzer(  # noqa: E731
        faces="dlib", landmarks="fan", models_dir=str(tmp_path / "none"), device=device).landmarker
    assert landmarks("cpu").device == "cpu"
    assert next(landmarks("cpu").network.parameters()).device.type == "cpu"
    loaded = []
    monkeypatch.setattr(fan_backend, "_load_network", lambda path, mtime, device: loaded.append(device))
    assert landmarks("cuda:1").device == "cuda:1" and landmarks("auto").device == "cuda:0"
    assert loaded == ["cuda:1", "cuda:0"]


def test_the_pipeline_hands_its_device_to_face_analysis(tmp_path, monkeypatch):
    import albumfix.faces.backends
    from albumfix.pipeline import Pipeline
    from albumfix.settings import Settings

    asked = []
    monkeypatch.setattr(albumfix.faces.backends, "create_analyzer", lambda **kwargs: asked.append(kwargs))
    (tmp_path / "album").mkdir()
    Pipeline(tmp_path / "album", Settings(output=tmp_path / "out", device="cuda:1").validate()).models.analyzer()
    assert asked[0]["device"] == "cuda:1"


def test_a_faded_sepia_print_is_found_on_the_equalised_luminance():
    """HOG alone misses both faces of a faded sepia print; the equalised retry finds them where
    the clean photo has them."""
    from albumfix.album.imageio import decode
    from albumfix.degrade import apply_tone
    from albumfix.faces.backends.dlib_backend import DlibModels
    detector = DlibModels.load().detector(cnn_fallback=False)
    clean = decode(SAMPLE_ALBUM / "1975/group.png").rgb8()
    sepia = apply_tone(clean, "sepia").astype(np.float32)
    faded = np.clip((sepia - sepia.mean()) * 0.12 + sepia.mean() + 30, 0, 255).astype(np.uint8)
    assert detector.detect_hog(faded) == []
    found = detector.detect(faded)
    truth = detector.detect(clean)
    assert len(truth) == 2 and len(found) == 2
    assert all(max(iou(f.box, t.box) for f in found) >= 0.3 for t in truth)  # each face of the clean photo
