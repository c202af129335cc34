"""Do no harm (albumfix.guard): a restored face that moves away from its person or blurs it is
pasted at a lower strength or not at all. Real photos, real dlib embeddings, real paste-back."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SAMPLE_ALBUM


@pytest.fixture(scope="module")
def faces():
    """(photo rgb, face) for the podium photo and for a face of another person (group photo)."""
    from albumfix.album.imageio import decode
    from albumfix.faces.backends import create_analyzer

    analyzer = create_analyzer("dlib", "dlib", cnn_fallback=False)
    podium = decode(SAMPLE_ALBUM / "2009/podium.jpg").rgb8()
    group = decode(SAMPLE_ALBUM / "1975/group.png").rgb8()
    return analyzer, (podium, analyzer.analyse(podium)[0]), (group, analyzer.analyse(group)[0])


def _guard(analyzer, rgb, face, restored, references=(), detail=0.0):
    from albumfix.faces.align import ffhq_transform
    from albumfix.faces.backends import FaceBox
    from albumfix.guard import guard_face
    from albumfix.restore.blend import paste_face

    t = ffhq_transform(face.landmarks, restored.shape[0])
    box = FaceBox(face.box, 1.0, None, "test")
    return guard_face(lambda s: paste_face(rgb, restored, t, face.landmarks, strength=s),
                      lambda px: px, lambda img: analyzer.embedding_part.embed(img, [box], [face.landmarks])[0],
                      rgb, face.landmarks, face.embedding, list(references), 1.0, detail=detail)


def _aligned(rgb, face, size=128):
    from albumfix.faces.align import ffhq_transform, warp_to_crop

    return warp_to_crop(rgb, ffhq_transform(face.landmarks, size), border="reflect")


def test_a_faithful_restoration_is_kept_at_full_strength(faces):
    analyzer, (rgb, face), _ = faces
    pixels, result = _guard(analyzer, rgb, face, _aligned(rgb, face, 512))
    assert result.strength == 1.0 and result.reason == "" and pixels is not None


def test_another_persons_face_is_never_pasted_at_full_strength(faces):
    analyzer, (rgb, face), (group, other) = faces
    pixels, result = _guard(analyzer, rgb, face, _aligned(group, other, 256))
    assert result.strength < 1.0 and "identity" in result.reason
    if pixels is None:
        assert "original face kept" in result.reason


def test_a_blurred_restoration_is_refused_for_sharpness(faces):
    analyzer, (rgb, face), _ = faces
    blurred = cv2.GaussianBlur(_aligned(rgb, face, 512), (0, 0), 3.0)
    pixels, result = _guard(analyzer, rgb, face, blurred)
    assert result.strength < 1.0 and "sharpness" in result.reason
    assert result.sharpness_output < result.sharpness_input


def test_with_references_the_face_must_come_nearer_them(faces):
    """Guided by the person's own photo, a restoration must bring the face nearer it than the
    input was (by REFERENCE_GAIN): the sharp face pasted into its blurred photo does, the blurred
    face pasted back unchanged does not, another person's face even less."""
    from dataclasses import replace

    from albumfix.album.imageio import decode
    from albumfix.faces.backends import FaceBox
    from albumfix.guard import REFERENCE_GAIN

    analyzer, (rgb, face), (group, other) = faces
    oval = decode(SAMPLE_ALBUM / "2009/oval office.jpg").rgb8()
    reference = max(analyzer.analyse(oval), key=lambda f: f.box[2] - f.box[0]).embedding  # the same man
    blurred = cv2.GaussianBlur(rgb, (0, 0), 2.5)
    seen = analyzer.embedding_part.embed(blurred, [FaceBox(face.box, 1.0, None, "test")], [face.landmarks])[0]
    lq = replace(face, embedding=seen)
    pixels, result = _guard(analyzer, blurred, lq, _aligned(rgb, face, 512), references=[reference])
    assert result.strength == 1.0 and result.identity_output <= result.identity_input - REFERENCE_GAIN["dlib"]
    for restored in (_aligned(blurred, face, 512), _aligned(group, other, 256)):
        pixels, result = _guard(analyzer, blurred, lq, restored, references=[reference])
        assert result.strength < 1.0 and "(references" in result.reason


def test_the_ceiling_falls_with_the_faces_own_detail():
    from albumfix.guard import DETAIL_CEILING, detail_ceiling

    start, end, floor = DETAIL_CEILING
    assert detail_ceiling(0.0) == detail_ceiling(start) == 1.0
    assert detail_ceiling(end) == detail_ceiling(1.0) == floor
    assert floor < detail_ceiling((start + end) / 2) < 1.0
    ladder = [detail_ceiling(d) for d in np.linspace(0.0, 0.5, 51)]
    assert all(a >= b for a, b in zip(ladder, ladder[1:]))


def test_a_face_with_real_detail_is_pasted_at_its_ceiling(faces):
    """The podium face is sharp: a restoration of it, faithful or not, is pasted at no more than
    the ceiling of its detail, and the JSON says why."""
    from albumfix.faces.quality import face_detail
    from albumfix.guard import detail_ceiling

    analyzer, (rgb, face), _ = faces
    detail = face_detail(rgb, face.landmarks)
    assert detail_ceiling(detail) < 1.0
    pixels, result = _guard(analyzer, rgb, face, _aligned(rgb, face, 512), detail=detail)
    assert result.strength == result.ceiling == detail_ceiling(detail)
    assert "real detail" in result.reason and pixels is not None
    assert result.to_json()["ceiling"] == result.ceiling
