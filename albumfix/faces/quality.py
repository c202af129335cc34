"""Face quality measures and the restore / exemplar / skip decision.

Measures (all from one RGB photo and a face's 68 landmarks):
- interocular_px: distance between the eye centres (mean of 36-41, 42-47), photo px.
- sharpness: on the FFHQ crop at ANALYSIS_SIZE = 256 px, inside the hull of landmarks 17-67
  (brows, eyes, nose, mouth; no background, so a blurred backdrop does not count), the RMS of
  the finest band (gray - Gaussian(1 px)) over the RMS of the next band (Gaussian(1 px) -
  Gaussian(2.5 px)). Dimensionless and contrast-free; faces smaller than the crop are enlarged,
  so low resolution reads as blur.
- noise: robust sigma (grey levels 0-255) of the 3 x 3 second-difference filter
  [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] / 6 over the flatter half of the face's photo pixels
  (MAD x 1.4826), divided by the photo->crop shrink factor when the face is larger than the
  crop (averaging k x k pixels divides white noise by k): noise as seen at the analysis size.
- blockiness: JPEG 8 x 8 block edges, measured on the photo's own pixel grid (blocks align with
  the stored photo, not with the rotated crop) over the face's landmark box: for each of the 8
  column phases, the mean absolute step between neighbouring columns; blockiness = strongest
  phase / mean of the other 7 - 1, averaged with the same for rows. About 0-0.1 without
  blocking; taking the strongest phase copes with crops and EXIF rotations that shift the grid.
- yaw_deg: from landmark asymmetry in the roll-free face frame: the nose tip's offset from the
  midpoint of the outer eye corners (36, 45) and of the mouth corners (48, 54), over their half
  widths, r = (dz / w) tan(yaw); dz / w = 0.88 (eyes) and 1.04 (mouth) on insightface's 3-D
  68-point mean face. Positive when the nose points to the photo's right. Exact for roll;
  a head tilted up by 10-20 deg reads 15-45 % low (the eye line tilts with yaw x pitch).
  |yaw| on the 240 CelebA photos: median 10 deg, 99th percentile 45 deg. For a face MTCNN found,
  the larger of that and its 5 key points' reading (`keypoint_yaw`): dlib's 68 points make a
  profile look frontal.
- landmark_spread: RMS distance of the 68 points from their centroid over the interocular
  distance; with the other shape checks (brows above eyes, nose tip between eyes and mouth,
  chin below mouth, left/right order, eye-mouth distance) it flags degenerate or implausible
  landmark sets. dlib on the 240 CelebA photos: spread 0.76-1.40 and eye-mouth / interocular
  0.92-1.93 (0.1-99.9th percentiles), hence the ranges SPREAD_RANGE and EYE_MOUTH_RANGE with
  margin (yaw makes both grow).
- score in [0, 1]: a logistic model on (log sharpness, log(1 + noise), blockiness), fitted on
  CelebA (benchmarks/bench_analysis.py quality): the 240 photos with face_px >= 200 and their
  mild degradations (Gaussian blur 0.7 px, down-and-up x1.5, noise sigma 3, JPEG 70) as
  "acceptable", the same photos with strong ones (blur 1.5 / 2.5 px, down-and-up x3 / x5, noise
  8 / 15, JPEG 15 / 30, two mixes) as "degraded"; people split in halves, fitted on one half.
  On the other half (117 photos per set), share of faces scoring below 0.6 / 0.7:
    sharp 0.03 / 0.04; blur 0.7 0.05 / 0.11; down x1.5 0.09 / 0.26; noise 3 0.35 / 0.51;
    JPEG 70 0.03 / 0.04; blur 1.5 0.97; blur 2.5 1.00; down x3 0.74; down x5 0.99; noise 8 0.89;
    noise 15 0.93; JPEG 30 0.80; JPEG 15 1.00; mixes 1.00; and naturally small CelebA faces
    (face_px <= 90, unmodified, 32) 1.00. AUC sharp vs each strong set 0.97-1.00.
  Hence decide_action's defaults: restore below 0.6, exemplar from 0.7.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from albumfix.faces.align import ffhq_transform, landmarks_to_crop, warp_to_crop
from albumfix.faces.analyzer import DetectedFace

ANALYSIS_SIZE = 256
RESTORE_MODES = ("auto", "all", "none")

# Logistic score = sigmoid(w . (log sharpness, log1p noise, blockiness) + b), fitted (module doc).
SCORE_WEIGHTS = (9.27, -4.81, -9.36)
SCORE_BIAS = 10.14

# Roll-free frame (unit: interocular distance): plausible ranges for real faces.
EYE_MOUTH_RANGE = (0.7, 2.4)
SPREAD_RANGE = (0.65, 2.5)
NOSE_DEPTH_EYES = 0.88  # (z nose tip - z outer eye corners) / half outer-eye width
NOSE_DEPTH_MOUTH = 1.04  # same with the mouth corners
# The detector's 5 key points judge yaw too (`keypoint_yaw`), for the detectors named here: a
# 68-point predictor pulls a profile towards a frontal shape (Helen Keller's profile in the real
# old photos: +3 deg by dlib's points, -61 deg by MTCNN's), so such a face is left as turned.
# (nose tip - eye-centre midpoint) / half eye-centre distance = KEYPOINT_NOSE_DEPTH x tan(yaw):
# fitted on the 45 faces of the real old photos that dlib and MTCNN both found (against dlib's
# yaw, correlation 0.94).
KEYPOINT_NOSE_DEPTH = 0.86
KEYPOINT_YAW_DETECTORS = ("mtcnn",)


@dataclass
class FaceQuality:
    """Quality of one face. Units: interocular_px photo px; sharpness dimensionless band-energy
    ratio (higher = sharper); noise grey levels at the 256-px analysis size; blockiness >= 0
    (0 = no JPEG blocks); yaw_deg degrees (0 = frontal); landmark_spread dimensionless;
    landmarks_ok with landmark_problem ("" when ok); score in [0, 1] (higher = better); detail:
    dimensionless edge detail at the photo's own resolution (`edge_detail`; 0 = none)."""

    interocular_px: float
    sharpness: float
    noise: float
    blockiness: float
    yaw_deg: float
    landmark_spread: float
    landmarks_ok: bool
    landmark_problem: str
    score: float
    detail: float = 0.0


@dataclass
class FaceDecision:
    """What to do with one face. action: "restore" | "exemplar" | "skip"; exemplar_eligible:
    good enough to guide the restoration of the same person's other faces (a restored face may
    be eligible too in mode "all"); reason: one human-readable line."""

    action: str
    exemplar_eligible: bool
    reason: str


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(68, 2) -> eye centre on the photo's left (36-41), on its right (42-47), float64."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)


def face_frame(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) photo px -> (68, 2) float64 in the roll-free frame: origin at the eye midpoint,
    u along left->right eye, v perpendicular pointing down the face, unit = interocular."""
    left, right = eye_centres(landmarks)
    axis = right - left
    iod = float(np.hypot(*axis))
    if not np.isfinite(iod) or iod < 1e-6:
        return np.full((68, 2), np.nan)
    ex = axis / iod
    ey = np.array([-ex[1], ex[0]])
    rel = np.asarray(landmarks, dtype=np.float64) - (left + right) / 2.0
    return np.stack([rel @ ex, rel @ ey], axis=1) / iod


def estimate_yaw(landmarks: np.ndarray) -> float:
    """(68, 2) -> yaw in degrees from nose-tip asymmetry (positive: nose towards photo right)."""
    f = face_frame(landmarks)
    ratios = []
    for a, b, depth in ((36, 45, NOSE_DEPTH_EYES), (48, 54, NOSE_DEPTH_MOUTH)):
        half = (f[b, 0] - f[a, 0]) / 2.0
        if half > 1e-6:
            ratios.append((f[30, 0] - (f[a, 0] + f[b, 0]) / 2.0) / half / depth)
    if not ratios:
        return 90.0
    return float(np.degrees(np.arctan(np.mean(ratios))))


def keypoint_yaw(keypoints: np.ndarray) -> float:
    """(5, 2) detector key points (eye on the photo's left, other eye, nose tip, mouth corners)
    -> yaw in degrees from the nose tip's offset along the eye line (positive: nose towards photo
    right); 90 when the eyes coincide."""
    k = np.asarray(keypoints, dtype=np.float64)
    axis = k[1] - k[0]
    half = float(np.hypot(*axis)) / 2.0
    if not np.isfinite(half) or half < 1e-6:
        return 90.0
    offset = float((k[2] - (k[0] + k[1]) / 2.0) @ (axis / (2.0 * half)))
    return float(np.degrees(np.arctan(offset / half / KEYPOINT_NOSE_DEPTH)))


def check_landmarks(landmarks: np.ndarray) -> tuple[bool, str, float]:
    """(68, 2) -> (ok, problem, spread): shape sanity in the roll-free frame."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        return False, "landmarks missing or not finite", float("nan")
    f = face_frame(lm)
    if not np.isfinite(f).all():
        return False, "eyes coincide", float("nan")
    spread = float(np.sqrt(((f - f.mean(axis=0)) ** 2).sum(axis=1).mean()))
    mouth_v = f[48:68, 1].mean()
    checks = [
        (SPREAD_RANGE[0] <= spread <= SPREAD_RANGE[1], f"landmark spread {spread:.2f} outside {SPREAD_RANGE}"),
        (f[17:27, 1].mean() < 0.0, "brows not above the eyes"),
        (0.0 < f[30, 1] < mouth_v, "nose tip not between eyes and mouth"),
        (EYE_MOUTH_RANGE[0] <= mouth_v <= EYE_MOUTH_RANGE[1], f"eye-mouth distance {mouth_v:.2f} x interocular implausible"),
        (f[8, 1] > mouth_v, "chin not below the mouth"),
        (f[54, 0] > f[48, 0] and f[45, 0] > f[36, 0], "left/right order of eyes or mouth corners broken"),
    ]
    for ok, problem in checks:
        if not ok:
            return False, problem, spread
    return True, "", spread


def _gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32 luma 0-255."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def inner_face_mask(crop_landmarks: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) crop px -> (S, S) bool, hull of points 17-67 (brows, eyes, nose, mouth)."""
    mask = np.zeros((size, size), dtype=np.uint8)
    hull = cv2.convexHull(np.round(crop_landmarks[17:68]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def band_sharpness(gray: np.ndarray, mask: np.ndarray) -> float:
    """gray: (S, S) float32; mask: (S, S) bool -> RMS(g - G1) / RMS(G1 - G2.5) inside mask."""
    b1 = cv2.GaussianBlur(gray, (0, 0), 1.0)
    b2 = cv2.GaussianBlur(gray, (0, 0), 2.5)
    fine = (gray - b1)[mask]
    mid = (b1 - b2)[mask]
    if fine.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(fine**2) / max(np.mean(mid**2), 1e-6)))


def noise_sigma(gray: np.ndarray) -> float:
    """gray: (H, W) float32 0-255 -> robust noise sigma (grey levels) over the flatter half."""
    if min(gray.shape) < 8:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32) / 6.0
    response = cv2.filter2D(gray, cv2.CV_32F, kernel)[1:-1, 1:-1]
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.5)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)[1:-1, 1:-1]
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)[1:-1, 1:-1]
    grad = np.hypot(gx, gy)
    flat = response[grad <= np.median(grad)]
    return float(1.4826 * np.median(np.abs(flat - np.median(flat))))


def _phase_ratio(steps: np.ndarray) -> float:
    """steps: (N,) mean |step| between neighbours i, i + 1 -> strongest of 8 phases / rest - 1."""
    phases = np.array([steps[p::8].mean() for p in range(8)])
    best = int(np.argmax(phases))
    others = np.delete(phases, best).mean()
    return float(phases[best] / max(others, 1e-6) - 1.0)


def blockiness(gray: np.ndarray) -> float:
    """gray: (h, w) float32 photo pixels (not resampled) -> JPEG 8 x 8 block measure, >= 0-ish.

    The strongest phase is taken, so the grid origin (shifted by crops, EXIF rotations and the
    region's offset) need not be known."""
    if min(gray.shape) < 24:
        return 0.0
    col_steps = np.abs(np.diff(gray, axis=1)).mean(axis=0)  # step between columns i and i + 1
    row_steps = np.abs(np.diff(gray, axis=0)).mean(axis=1)
    return (_phase_ratio(col_steps) + _phase_ratio(row_steps)) / 2.0


def edge_detail(gray: np.ndarray, interocular: float) -> float:
    """gray: (h, w) float32 photo pixels of the face (not resampled); interocular: photo px ->
    the face's real fine detail, dimensionless (0 = none).

    The band above half the photo's Nyquist frequency (the region minus its 2x area-downscaled,
    bilinearly upscaled copy) is what an upscaled small or blurred face lacks. Its energy is
    measured where the face has edges (the strongest 20 % of smoothed gradients) minus its
    energy in the flattest 40 % (grain, sensor noise and JPEG blocks put energy everywhere;
    detail only at edges), square-rooted, over the RMS of the face's mid band (Gaussian 1 px -
    Gaussian interocular / 8 px), so contrast and fading cancel. On the album benchmark's
    held-out faces (`albumfix eval --albums`): untouched photos 0.22 / 0.40 / 0.72 (5th /
    50th / 95th percentile), damaged ones 0.00-0.08 / 0.09-0.12 / 0.17-0.27 by family; AUC
    0.99 (the logistic score: 0.64)."""
    h, w = gray.shape
    if min(h, w) < 16 or interocular < 4:
        return 0.0
    coarse = cv2.resize(cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    fine = gray - coarse
    mid = cv2.GaussianBlur(gray, (0, 0), 1.0) - cv2.GaussianBlur(gray, (0, 0), interocular / 8.0)
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.5)
    grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    edges, flat = grad > np.percentile(grad, 80), grad < np.percentile(grad, 40)
    excess = float(np.mean(fine[edges] ** 2) - np.mean(fine[flat] ** 2)) if flat.any() and edges.any() else 0.0
    return float(np.sqrt(max(excess, 0.0)) / max(float(np.sqrt(np.mean(mid**2))), 1e-3))


def face_sharpness(rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """rgb: (H, W, 3) uint8 photo; landmarks: (68, 2) photo px -> `band_sharpness` of the inner
    face on its FFHQ crop at ANALYSIS_SIZE (reflect border)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    t = ffhq_transform(lm, ANALYSIS_SIZE)
    crop = _gray(warp_to_crop(rgb, t, border="reflect"))
    return band_sharpness(crop, inner_face_mask(landmarks_to_crop(lm, t), ANALYSIS_SIZE))


def quality_score(sharpness: float, noise: float, block: float) -> float:
    """Logistic combination (weights fitted on CelebA, see module doc) -> [0, 1]."""
    w = SCORE_WEIGHTS
    z = w[0] * np.log(max(sharpness, 1e-3)) + w[1] * np.log1p(max(noise, 0.0)) + w[2] * block + SCORE_BIAS
    return float(1.0 / (1.0 + np.exp(-z)))


def landmark_box(landmarks: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(68, 2) -> photo pixel box (x0, y0, x1, y1), end exclusive, clipped to the photo."""
    lo = np.floor(landmarks.min(axis=0)).astype(int)
    hi = np.ceil(landmarks.max(axis=0)).astype(int) + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    return x0, y0, max(min(hi[0], width), x0), max(min(hi[1], height), y0)


def _face_gray(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 photo, (68, 2) finite photo px -> (h, w) float32 luma of the landmark
    box ((0, 0) when the box is empty)."""
    x0, y0, x1, y1 = landmark_box(lm, *rgb.shape[:2])
    return _gray(rgb[y0:y1, x0:x1]) if x1 > x0 and y1 > y0 else np.zeros((0, 0), np.float32)


def _region_detail(region: np.ndarray, iod: float) -> float:
    """`edge_detail` of a face's landmark-box luma, 0 for an empty box."""
    return edge_detail(region, iod) if region.size else 0.0


def face_detail(rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """rgb: (H, W, 3) uint8 photo; landmarks: (68, 2) photo px -> `edge_detail` of the face's
    landmark box (0 for degenerate landmarks or an empty box), as `assess_face` stores it."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        return 0.0
    left, right = eye_centres(lm)
    iod = float(np.hypot(*(right - left)))
    return _region_detail(_face_gray(rgb, lm), iod) if iod >= 1e-6 else 0.0


def lacks_detail(detail: float) -> bool:
    """Whether a face's `edge_detail` is below MIN_EXEMPLAR_DETAIL: a degraded face, never an
    exemplar, embedded by the degradation-robust network, its fine band noise or artefacts."""
    return detail < MIN_EXEMPLAR_DETAIL


def is_degraded(rgb: np.ndarray, landmarks: np.ndarray) -> bool:
    """`lacks_detail` of the face at `landmarks` (68, 2) photo px in rgb (H, W, 3) uint8."""
    return lacks_detail(face_detail(rgb, landmarks))


def assess_face(rgb: np.ndarray, face: DetectedFace) -> FaceQuality:
    """rgb: (H, W, 3) uint8 photo; face: its landmarks (68, 2) photo px -> FaceQuality. yaw_deg:
    from the landmarks, or from the detector's key points (KEYPOINT_YAW_DETECTORS) when those
    see the face turned further."""
    lm = np.asarray(face.landmarks, dtype=np.float64)
    ok, problem, spread = check_landmarks(lm)
    left, right = eye_centres(lm) if lm.shape == (68, 2) else (np.zeros(2), np.zeros(2))
    iod = float(np.hypot(*(right - left)))
    if not np.isfinite(lm).all() or iod < 1e-6:
        return FaceQuality(iod, 0.0, 0.0, 0.0, 90.0, spread, False, problem or "degenerate landmarks", 0.0, 0.0)
    t = ffhq_transform(lm, ANALYSIS_SIZE)
    sharp = face_sharpness(rgb, lm)
    region = _face_gray(rgb, lm)
    noise = noise_sigma(region) * min(1.0, t.scale) if region.size else 0.0
    block = blockiness(region) if region.size else 0.0
    yaw = estimate_yaw(lm)
    if face.keypoints is not None and face.detector in KEYPOINT_YAW_DETECTORS:
        turned = keypoint_yaw(face.keypoints)
        yaw = turned if abs(turned) > abs(yaw) else yaw
    return FaceQuality(
        interocular_px=iod,
        sharpness=sharp,
        noise=noise,
        blockiness=block,
        yaw_deg=yaw,
        landmark_spread=spread,
        landmarks_ok=ok,
        landmark_problem=problem,
        score=quality_score(sharp, noise, block),
        detail=_region_detail(region, iod),
    )


BETTER_DETAIL_RATIO = 1.5
MIN_EXEMPLAR_DETAIL = 0.25  # above the damaged faces' 95th percentile (edge_detail)
EXEMPLAR_MIN_SIZE = 32.0  # interocular px: smaller faces never guide another


def clearly_better(candidate: FaceQuality, query: FaceQuality) -> bool:
    """Whether `candidate` can guide the restoration of `query`: real fine detail (`edge_detail`)
    at least BETTER_DETAIL_RATIO times the query's and at least MIN_EXEMPLAR_DETAIL, and at least
    3/4 of its size (interocular). Relative, so an album of modest photos still has guidance
    where its photos differ; the floor keeps damaged faces (which lack detail whatever their
    noise, grain or JPEG blocks) from ever guiding."""
    return bool(better_than(np.array(candidate.detail), np.array(candidate.interocular_px),
                            np.array(query.detail), np.array(query.interocular_px)))


def better_than(detail: np.ndarray, interocular: np.ndarray, query_detail: np.ndarray,
                query_interocular: np.ndarray) -> np.ndarray:
    """`clearly_better` on arrays that broadcast (e.g. candidates (1, N) against queries (Q, 1))
    -> bool array."""
    return ((detail >= np.maximum(BETTER_DETAIL_RATIO * query_detail, MIN_EXEMPLAR_DETAIL))
            & (interocular >= 0.75 * query_interocular))


def decide_action(
    q: FaceQuality,
    restore_mode: str = "auto",
    min_face_size: float = 16.0,
    max_yaw_deg: float = 45.0,
    restore_below: float = 0.6,
    exemplar_min_score: float = 0.7,
    exemplar_min_size: float = EXEMPLAR_MIN_SIZE,
) -> FaceDecision:
    """Restore, use as exemplar, or skip one face.

    min_face_size / exemplar_min_size: interocular distance in photo px (16 px is about a
    40-px face box, the smallest dlib's HOG finds with one upsampling). Skipped (never
    restored nor used): |yaw| > max_yaw_deg (the restorer aligns frontal faces: a profile is
    found and left, and says so even when its foreshortened eyes are also closer than
    min_face_size), smaller than min_face_size, implausible landmarks.
    exemplar_eligible: score >= exemplar_min_score and interocular >= exemplar_min_size.
    restore_mode "auto": score < restore_below -> restore; else exemplar when eligible, else
    skip (fine as it is). "all": every face not skipped is restored. "none": nothing restored.
    """
    if restore_mode not in RESTORE_MODES:
        raise ValueError(f"restore_mode must be one of {RESTORE_MODES}, got {restore_mode!r}")
    if abs(q.yaw_deg) > max_yaw_deg:
        return FaceDecision("skip", False, f"face turned too far: yaw {q.yaw_deg:+.0f} deg beyond +-{max_yaw_deg:g}")
    if q.interocular_px < min_face_size:
        return FaceDecision("skip", False, f"face too small: interocular {q.interocular_px:.1f} px < {min_face_size:g} px")
    if not q.landmarks_ok:
        return FaceDecision("skip", False, f"unreliable landmarks: {q.landmark_problem}")
    eligible = q.score >= exemplar_min_score and q.interocular_px >= exemplar_min_size
    quality = f"score {q.score:.2f}"
    if restore_mode == "all":
        return FaceDecision("restore", eligible, f"restore mode all ({quality})")
    if restore_mode == "auto" and q.score < restore_below:
        return FaceDecision("restore", eligible, f"degraded ({quality} < {restore_below:g})")
    if eligible:
        return FaceDecision("exemplar", True, f"sharp and large ({quality}, interocular {q.interocular_px:.0f} px)")
    if restore_mode == "none":
        return FaceDecision("skip", False, f"restore mode none, not exemplar quality ({quality})")
    return FaceDecision("skip", False, f"good enough to keep, not exemplar quality ({quality})")
