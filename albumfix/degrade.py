"""Synthetic album damage: seeded degradations of clean face crops (training) and whole photos
(the album benchmark), shared by training, evaluation and the benchmark (so it lives below all of
them: `people/` and `restore/` may use it too, `train/` is never needed).

Every degradation separates the *look* of a print (tone: colour, grayscale, sepia; fading;
colour cast; vignette), which a restorer must keep, from the *damage* to its detail (blur,
resolution, noise, grain, JPEG, scratches), which it should undo: `apply_look` gives the ground
truth of a damaged image (the clean image with the same look).

The crop model of an old album photo (`sample_degradation` / `apply_degradation`), in order:

1. *tone* (the look of the print, applied to the training target as well): colour, grayscale or
   sepia. A restorer should keep a black-and-white photo black-and-white, so the target of a
   grayscale input is the grayscale ground truth, not the colour one.
2. *stage 1* (camera and print): blur (isotropic / anisotropic Gaussian or motion), downscale to
   an intermediate size, noise (Gaussian, Poisson or film grain), optional JPEG.
3. *print ageing*: fading (contrast loss, lifted blacks, colour cast) and optional scratches/dust.
4. *stage 2* (scan): a milder blur, resize to the final small size, noise, JPEG.
5. resize back up to the input size, so the network always sees (S, S, 3).

`sample_degradation` draws every random choice from a numpy Generator into a `Degradation`
record; `apply_degradation` is then a pure function of (image, record), so a seed reproduces a
sample exactly. The "default" preset is the one used for training and for evaluation. Images
may be any (H, W, 3): resize steps divide both sides by the record's scale factors.

Whole-photo damage families (`PHOTO_FAMILIES`, `sample_photo_damage` / `apply_photo_damage`;
`DAMAGE_FAMILIES` adds the calibration and probe families below):
- "training": the crop model above applied to the whole photo;
- "aged-print": a print made small from its negative (area downscale x2-x5), film grain, a tone
  (sepia, gray or colour), fading with a colour cast and a vignette, then a scan (bicubic
  upscale, scanner blur, JPEG 85-95) - nothing of it is in training;
- "web-thumbnail": a strong downscale (x3-x6), JPEG q20-50 with 4:2:0 chroma subsampling,
  re-saved a second time at q20-50, upscaled back for viewing - not in training either.
A calibration family (`CALIBRATION_FAMILIES`), for tuning the pipeline's rules on albums of
training people, never in a benchmark's default families:
- "training-mild": the crop model's `mild` preset on the whole photo (x1-x2 of resolution lost,
  light blur, noise and JPEG): the nearly sharp end of our own degradation.
A probe family (`PROBE_FAMILIES`), never in training and never looked at while tuning, for a
benchmark album of damage nobody here has seen the results of:
- "phone-snap": a print photographed with a phone in a room: a tone, uneven light and a glare
  patch (the look), a defocused lens (disk blur), a small sensor (area downscale x1.5-x3) with
  luma and blotchy chroma noise, the phone's own processing (edge-preserving smoothing, then an
  unsharp mask that leaves halos), JPEG q60-85 with 4:2:0, shown enlarged back.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

TONES = ("color", "gray", "sepia")
NOISE_KINDS = ("gaussian", "poisson", "grain")
BLUR_KINDS = ("iso", "aniso", "motion")
_INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                  dtype=np.float32)


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges of the random degradation. Pixel quantities are in 8-bit units (0-255).

    scale: overall downscale factor (sampled log-uniformly); the final small side is S / scale.
    stage1_share: fraction (range) of log(scale) spent in stage 1, the rest in stage 2.
    blur*_prob: chance of a blur in each stage; blur kind weights iso / aniso / motion.
    blur*_sigma: Gaussian sigma range in px *of the image the blur acts on*.
    motion_length: motion-blur length range in px (stage 1 only).
    noise*_prob: chance of noise; noise kind weights gaussian / poisson / grain.
    gauss_sigma*: Gaussian noise std range; gray_noise_prob: chance the noise is monochrome.
    poisson_peak: photons for a white pixel (smaller = noisier), log-uniform.
    grain_sigma: film-grain std range; grain_size: grain blur sigma range in px.
    jpeg*_prob / jpeg_quality: chance of JPEG in each stage and its quality range.
    gray_prob / sepia_prob: chance of a grayscale / sepia print (the rest is colour).
    fade_prob: chance of fading; fade_contrast: kept contrast; fade_black: lifted black level;
    fade_cast: per-channel gain deviation (colour prints only).
    scratch_prob: chance of scratches and dust; scratch_count: number of strokes.
    """

    scale: tuple[float, float] = (2.0, 8.0)
    stage1_share: tuple[float, float] = (0.2, 0.7)
    blur1_prob: float = 0.9
    blur2_prob: float = 0.6
    blur_kind_weights: tuple[float, float, float] = (0.5, 0.35, 0.15)
    blur1_sigma: tuple[float, float] = (0.4, 3.0)
    blur2_sigma: tuple[float, float] = (0.2, 1.5)
    motion_length: tuple[float, float] = (3.0, 11.0)
    noise1_prob: float = 0.8
    noise2_prob: float = 0.6
    noise_kind_weights: tuple[float, float, float] = (0.4, 0.25, 0.35)
    gauss_sigma1: tuple[float, float] = (1.0, 15.0)
    gauss_sigma2: tuple[float, float] = (1.0, 10.0)
    gray_noise_prob: float = 0.4
    poisson_peak: tuple[float, float] = (40.0, 400.0)
    grain_sigma: tuple[float, float] = (3.0, 14.0)
    grain_size: tuple[float, float] = (0.4, 1.2)
    jpeg1_prob: float = 0.4
    jpeg2_prob: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)
    gray_prob: float = 0.2
    sepia_prob: float = 0.1
    fade_prob: float = 0.5
    fade_contrast: tuple[float, float] = (0.6, 1.0)
    fade_black: tuple[float, float] = (0.0, 40.0)
    fade_cast: float = 0.08
    scratch_prob: float = 0.1
    scratch_count: tuple[int, int] = (1, 4)


_LIGHT = DegradationConfig(
    scale=(1.5, 3.0), blur1_sigma=(0.3, 1.2), blur2_sigma=(0.2, 0.6), gauss_sigma1=(1.0, 5.0),
    gauss_sigma2=(1.0, 4.0), poisson_peak=(200.0, 800.0), grain_sigma=(2.0, 5.0),
    jpeg_quality=(70, 95), fade_contrast=(0.85, 1.0), fade_black=(0.0, 15.0), scratch_prob=0.0)

PRESETS: dict[str, DegradationConfig] = {
    "default": DegradationConfig(),
    "light": _LIGHT,
    # the light damage down to none of the resolution lost: a nearly sharp face, which the
    # restorer must learn to leave nearly alone (the default starts at x2)
    "mild": replace(_LIGHT, scale=(1.0, 2.0)),
    "heavy": DegradationConfig(
        scale=(6.0, 10.0), blur1_sigma=(1.5, 4.0), blur2_sigma=(0.8, 2.0), gauss_sigma1=(10.0, 25.0),
        gauss_sigma2=(8.0, 15.0), poisson_peak=(20.0, 60.0), grain_sigma=(10.0, 20.0),
        jpeg_quality=(20, 50), fade_contrast=(0.5, 0.7), fade_black=(20.0, 50.0), scratch_prob=0.3),
}


def get_preset(name: str) -> DegradationConfig:
    """The named degradation preset ("mild", "light", "default", "heavy")."""
    if name not in PRESETS:
        raise ValueError(f"unknown degradation preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class Noise:
    """One noise draw. kind in NOISE_KINDS; amount: std (gaussian, grain) in 0-255 units or
    white-pixel photon count (poisson); gray: monochrome noise; grain_size: grain blur sigma px;
    seed: seeds the noise field so the record reproduces it."""

    kind: str
    amount: float
    gray: bool
    grain_size: float
    seed: int


@dataclass(frozen=True)
class Fade:
    """Print fading: out = black + contrast * (x - mean) + mean, times per-channel gain (3,)."""

    contrast: float
    black: float
    gain: tuple[float, float, float]


@dataclass(frozen=True)
class Degradation:
    """A fully sampled degradation; `apply_degradation` is deterministic given it.

    blur1 / blur2: (k, k) float32 kernels summing to 1, or None. scale1 / scale2: downscale
    factor (>= 1) of the image after the stage-1 / stage-2 resize, relative to the input (a side
    s becomes max(8, round(s / scale))); interp1 / interp2 / interp_up: cv2 interpolation flags.
    jpeg1 / jpeg2: JPEG quality or None. scratch_seed: seeds scratch/dust drawing, None = none.
    """

    tone: str
    blur1: np.ndarray | None
    scale1: float
    interp1: int
    noise1: Noise | None
    jpeg1: int | None
    fade: Fade | None
    scratch_seed: int | None
    scratch_count: int
    blur2: np.ndarray | None
    scale2: float
    interp2: int
    noise2: Noise | None
    jpeg2: int | None
    interp_up: int


def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float, size: int | None = None) -> np.ndarray:
    """Anisotropic Gaussian kernel rotated by `angle` radians. Returns (k, k) float32, sum 1;
    k is odd, by default 2 * ceil(3 * max sigma) + 1."""
    if size is None:
        size = 2 * int(math.ceil(3.0 * max(sigma_x, sigma_y))) + 1
    half = size // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Linear motion blur of `length` px along `angle` radians, drawn anti-aliased.
    Returns (k, k) float32, sum 1, k odd."""
    size = 2 * int(math.ceil(length / 2.0)) + 1
    canvas = np.zeros((size * 8, size * 8), np.float32)
    centre = size * 4
    dx, dy = math.cos(angle) * length * 4.0, math.sin(angle) * length * 4.0
    cv2.line(canvas, (int(round(centre - dx)), int(round(centre - dy))),
             (int(round(centre + dx)), int(round(centre + dy))), 1.0, thickness=8, lineType=cv2.LINE_AA)
    k = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return (k / max(float(k.sum()), 1e-8)).astype(np.float32)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _sample_blur(rng: np.random.Generator, cfg: DegradationConfig, sigma: tuple[float, float],
                 motion: bool) -> np.ndarray:
    weights = np.array(cfg.blur_kind_weights, dtype=np.float64)
    if not motion:
        weights[2] = 0.0
    kind = BLUR_KINDS[int(rng.choice(3, p=weights / weights.sum()))]
    angle = _uniform(rng, (0.0, math.pi))
    if kind == "motion":
        return motion_kernel(_uniform(rng, cfg.motion_length), angle)
    sx = _uniform(rng, sigma)
    sy = sx if kind == "iso" else _uniform(rng, sigma)
    return gaussian_kernel(sx, sy, angle)


def _sample_noise(rng: np.random.Generator, cfg: DegradationConfig, gauss: tuple[float, float],
                  force_gray: bool) -> Noise:
    weights = np.array(cfg.noise_kind_weights, dtype=np.float64)
    kind = NOISE_KINDS[int(rng.choice(3, p=weights / weights.sum()))]
    if kind == "gaussian":
        amount = _uniform(rng, gauss)
    elif kind == "poisson":
        amount = _log_uniform(rng, cfg.poisson_peak)
    else:
        amount = _uniform(rng, cfg.grain_sigma)
    gray = force_gray or kind == "grain" or bool(rng.random() < cfg.gray_noise_prob)
    return Noise(kind=kind, amount=amount, gray=gray, grain_size=_uniform(rng, cfg.grain_size),
                 seed=int(rng.integers(0, 2**31 - 1)))


def sample_degradation(rng: np.random.Generator, size: int,
                       config: DegradationConfig | None = None) -> Degradation:
    """Draw one degradation for an (size, size) crop from `rng` (consumed in a fixed order).
    size only documents the intended crop; the record applies to images of any size."""
    cfg = config or PRESETS["default"]
    u = rng.random()
    tone = "gray" if u < cfg.gray_prob else "sepia" if u < cfg.gray_prob + cfg.sepia_prob else "color"
    scale = _log_uniform(rng, cfg.scale)
    scale1 = scale ** _uniform(rng, cfg.stage1_share)
    blur1 = _sample_blur(rng, cfg, cfg.blur1_sigma, motion=True) if rng.random() < cfg.blur1_prob else None
    interp1 = _INTERPOLATIONS[int(rng.integers(0, 3))]
    noise1 = _sample_noise(rng, cfg, cfg.gauss_sigma1, tone != "color") if rng.random() < cfg.noise1_prob else None
    jpeg1 = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg1_prob else None
    fade = None
    if rng.random() < cfg.fade_prob:
        gain = tuple(float(g) for g in 1.0 + rng.uniform(-cfg.fade_cast, cfg.fade_cast, 3))
        fade = Fade(contrast=_uniform(rng, cfg.fade_contrast), black=_uniform(rng, cfg.fade_black),
                    gain=(1.0, 1.0, 1.0) if tone == "gray" else gain)
    scratch = rng.random() < cfg.scratch_prob
    scratch_seed = int(rng.integers(0, 2**31 - 1)) if scratch else None
    scratch_count = int(rng.integers(cfg.scratch_count[0], cfg.scratch_count[1] + 1)) if scratch else 0
    blur2 = _sample_blur(rng, cfg, cfg.blur2_sigma, motion=False) if rng.random() < cfg.blur2_prob else None
    interp2 = _INTERPOLATIONS[int(rng.integers(0, 3))]
    noise2 = _sample_noise(rng, cfg, cfg.gauss_sigma2, tone != "color") if rng.random() < cfg.noise2_prob else None
    jpeg2 = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg2_prob else None
    interp_up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(0, 2))]
    return Degradation(tone=tone, blur1=blur1, scale1=scale1, interp1=interp1, noise1=noise1, jpeg1=jpeg1,
                       fade=fade, scratch_seed=scratch_seed, scratch_count=scratch_count, blur2=blur2,
                       scale2=scale, interp2=interp2, noise2=noise2, jpeg2=jpeg2, interp_up=interp_up)


def apply_tone(image: np.ndarray, tone: str) -> np.ndarray:
    """Print look. image: (H, W, 3) uint8 RGB -> same; "gray" gives R == G == B exactly."""
    if tone == "color":
        return image
    x = image.astype(np.float32)
    if tone == "gray":
        y = np.clip(np.rint(x @ _LUMA), 0, 255).astype(np.uint8)
        return np.repeat(y[..., None], 3, axis=2)
    if tone == "sepia":
        return np.clip(np.rint(x @ _SEPIA.T), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown tone {tone!r}; choose from {TONES}")


def _blur(x: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    if kernel is None:
        return x
    return cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _resize(x: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    """Resize (H, W[, C]) to size = (height, width); area averaging only when shrinking."""
    if x.shape[:2] == tuple(size):
        return x
    if interp == cv2.INTER_AREA and size[0] > x.shape[0]:
        interp = cv2.INTER_LINEAR
    out = cv2.resize(x, (size[1], size[0]), interpolation=interp)
    return out.reshape(size + x.shape[2:])


def _scaled(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(height, width) of an image of `shape` divided by `scale` (each side at least 8 px)."""
    return max(8, int(round(shape[0] / scale))), max(8, int(round(shape[1] / scale)))


def _add_noise(x: np.ndarray, noise: Noise | None) -> np.ndarray:
    """x: (H, W, 3) float32 in 0-255 -> noisy float32 (unclipped)."""
    if noise is None:
        return x
    rng = np.random.default_rng(noise.seed)
    h, w = x.shape[:2]
    channels = 1 if noise.gray else 3
    if noise.kind == "gaussian":
        return x + rng.normal(0.0, noise.amount, (h, w, channels)).astype(np.float32)
    if noise.kind == "poisson":
        base = np.clip(x, 0, 255)
        if noise.gray:
            luma = base @ _LUMA
            shot = rng.poisson(luma * noise.amount / 255.0) * (255.0 / noise.amount) - luma
            return x + shot[..., None].astype(np.float32)
        return (rng.poisson(base * noise.amount / 255.0) * (255.0 / noise.amount)).astype(np.float32)
    field = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), noise.grain_size)
    field *= noise.amount / max(float(field.std()), 1e-6)
    v = np.clip(x @ _LUMA, 0, 255) / 255.0
    midtone = 0.3 + 2.8 * v * (1.0 - v)  # grain shows most in the midtones
    return x + (field * midtone)[..., None]


def _jpeg(x: np.ndarray, quality: int | None) -> np.ndarray:
    """x: (H, W, 3) uint8 RGB -> JPEG round trip at `quality`."""
    if quality is None:
        return x
    ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _fade(x: np.ndarray, fade: Fade | None, mean: float) -> np.ndarray:
    """x: (H, W, 3) float32 0-255 -> faded float32; mean: the grey level contrast pivots on
    (the toned clean image's mean, so that `apply_look` fades the ground truth identically)."""
    if fade is None:
        return x
    out = (x - mean) * fade.contrast + mean
    out = fade.black + out * (255.0 - fade.black) / 255.0
    return out * np.asarray(fade.gain, dtype=np.float32)


def _scratches(x: np.ndarray, seed: int | None, count: int) -> np.ndarray:
    """Draws `count` thin curved scratches and a few dust specks, light or dark, on uint8 (H, W, 3)."""
    if seed is None:
        return x
    rng = np.random.default_rng(seed)
    h, w = x.shape[:2]
    out = x.copy()
    for _ in range(count):
        start = rng.uniform(0, [w, h])
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.3, 1.0) * max(h, w)
        bend = rng.normal(0, 0.15 * length)
        t = np.linspace(0.0, 1.0, 12)[:, None]
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        pts = start + t * length * direction + (4 * t * (1 - t)) * bend * normal
        value = int(rng.choice([rng.integers(200, 256), rng.integers(0, 50)]))
        cv2.polylines(out, [np.round(pts).astype(np.int32)], False, (value, value, value),
                      thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3 * count + 1))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        value = int(rng.choice([rng.integers(200, 256), rng.integers(0, 50)]))
        cv2.circle(out, centre, int(rng.integers(1, 3)), (value, value, value), -1, cv2.LINE_AA)
    return out


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")


def apply_degradation(image: np.ndarray, d: Degradation) -> np.ndarray:
    """Degrade a clean image. image: (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB, same size.

    The look (tone and fading) is part of the result (`apply_look` gives the matching ground
    truth); a grayscale result has R == G == B.
    """
    _check_rgb(image)
    x = apply_tone(image, d.tone).astype(np.float32)
    mean = float(x.mean())
    x = _resize(_blur(x, d.blur1), _scaled(image.shape, d.scale1), d.interp1)
    x = _jpeg(_to_uint8(_add_noise(x, d.noise1)), d.jpeg1)
    x = _scratches(_to_uint8(_fade(x.astype(np.float32), d.fade, mean)), d.scratch_seed, d.scratch_count)
    x = _resize(_blur(x.astype(np.float32), d.blur2), _scaled(image.shape, d.scale2), d.interp2)
    x = _jpeg(_to_uint8(_add_noise(x, d.noise2)), d.jpeg2)
    x = _to_uint8(_resize(x.astype(np.float32), image.shape[:2], d.interp_up))
    return apply_tone(x, "gray") if d.tone == "gray" else x


def apply_look(image: np.ndarray, d: Degradation) -> np.ndarray:
    """The ground truth of `apply_degradation(image, d)`: the clean image with the same tone and
    fading, none of the damage. image: (H, W, 3) uint8 RGB -> same."""
    _check_rgb(image)
    x = apply_tone(image, d.tone).astype(np.float32)
    x = _to_uint8(_fade(x, d.fade, float(x.mean())))
    return apply_tone(x, "gray") if d.tone == "gray" else x


def degrade(image: np.ndarray, rng: np.random.Generator,
            config: DegradationConfig | None = None) -> np.ndarray:
    """Sample and apply one degradation. image: (H, W, 3) uint8 -> (H, W, 3) uint8."""
    return apply_degradation(image, sample_degradation(rng, image.shape[0], config))


# --- whole-photo damage families (the album benchmark) ------------------------------------------
PHOTO_FAMILIES = ("training", "aged-print", "web-thumbnail")
CALIBRATION_FAMILIES = ("training-mild",)
PROBE_FAMILIES = ("phone-snap",)
DAMAGE_FAMILIES = PHOTO_FAMILIES + CALIBRATION_FAMILIES + PROBE_FAMILIES  # every family sample_photo_damage draws


@dataclass(frozen=True)
class AgedPrint:
    """An aged print and its scan. tone in TONES; print_scale: area downscale of the print (>= 1);
    grain: film-grain std (0-255 units) at print size, grain_size its blur sigma px, seed its
    field; fade: fading and colour cast; vignette: darkening at the corners (0-1, a cos^4-like
    radial falloff); scan_blur: Gaussian sigma px at photo size; jpeg: the scan's quality."""

    tone: str
    print_scale: float
    grain: float
    grain_size: float
    seed: int
    fade: Fade
    vignette: float
    scan_blur: float
    jpeg: int


@dataclass(frozen=True)
class WebThumbnail:
    """A web thumbnail: downscale factor scale (>= 1) with interp; two JPEG saves (4:2:0) at
    qualities jpeg1 then jpeg2; shown upscaled back to the original size with interp_up."""

    scale: float
    interp: int
    jpeg1: int
    jpeg2: int
    interp_up: int


@dataclass(frozen=True)
class PhoneSnap:
    """A print photographed with a phone. tone in TONES; light: brightness falloff across the
    photo (0-1) along direction angle (radians); glare: additive haze (0-255) of a Gaussian patch
    at glare_xy (fractions of width, height) with sigma glare_size (fraction of the diagonal);
    defocus: disk blur radius px at photo size; sensor_scale: area downscale (>= 1); luma_noise,
    chroma_noise: std (0-255) at sensor size, the chroma field blurred by 1.5 px (blotches), seed
    its fields; smooth: bilateral range sigma of the phone's denoising; sharpen: unsharp-mask
    amount (radius 1.2 px at sensor size); jpeg: quality (4:2:0)."""

    tone: str
    light: float
    angle: float
    glare: float
    glare_xy: tuple[float, float]
    glare_size: float
    defocus: float
    sensor_scale: float
    luma_noise: float
    chroma_noise: float
    seed: int
    smooth: float
    sharpen: float
    jpeg: int


@dataclass(frozen=True)
class PhotoDamage:
    """One sampled whole-photo damage of a family in DAMAGE_FAMILIES; exactly one of
    `crop_model` (families "training" and "training-mild"), `aged`, `thumbnail` and `phone` is set."""

    family: str
    crop_model: Degradation | None = None
    aged: AgedPrint | None = None
    thumbnail: WebThumbnail | None = None
    phone: PhoneSnap | None = None


def sample_photo_damage(rng: np.random.Generator, family: str) -> PhotoDamage:
    """Draw one damage of `family` (see the module docstring) from `rng`."""
    if family == "training":
        return PhotoDamage(family, crop_model=sample_degradation(rng, 128))
    if family == "training-mild":
        return PhotoDamage(family, crop_model=sample_degradation(rng, 128, PRESETS["mild"]))
    if family == "aged-print":
        tone = ("sepia", "gray", "color")[int(rng.choice(3, p=(0.4, 0.3, 0.3)))]
        cast = 0.0 if tone == "gray" else 0.1
        gain = tuple(float(g) for g in 1.0 + rng.uniform(-cast, cast, 3))
        fade = Fade(contrast=_uniform(rng, (0.55, 0.9)), black=_uniform(rng, (10.0, 45.0)), gain=gain)
        return PhotoDamage(family, aged=AgedPrint(
            tone=tone, print_scale=_log_uniform(rng, (2.0, 5.0)), grain=_uniform(rng, (4.0, 12.0)),
            grain_size=_uniform(rng, (0.5, 1.0)), seed=int(rng.integers(0, 2**31 - 1)), fade=fade,
            vignette=_uniform(rng, (0.15, 0.45)), scan_blur=_uniform(rng, (0.5, 1.3)),
            jpeg=int(rng.integers(85, 96))))
    if family == "web-thumbnail":
        return PhotoDamage(family, thumbnail=WebThumbnail(
            scale=_log_uniform(rng, (3.0, 6.0)), interp=(cv2.INTER_AREA, cv2.INTER_LINEAR)[int(rng.integers(0, 2))],
            jpeg1=int(rng.integers(20, 51)), jpeg2=int(rng.integers(20, 51)),
            interp_up=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(0, 2))]))
    if family == "phone-snap":
        glare = _uniform(rng, (20.0, 70.0)) if rng.random() < 0.6 else 0.0
        return PhotoDamage(family, phone=PhoneSnap(
            tone=TONES[int(rng.choice(3, p=(0.5, 0.25, 0.25)))], light=_uniform(rng, (0.1, 0.35)),
            angle=_uniform(rng, (0.0, 2 * math.pi)), glare=glare,
            glare_xy=(_uniform(rng, (0.1, 0.9)), _uniform(rng, (0.1, 0.9))), glare_size=_uniform(rng, (0.1, 0.3)),
            defocus=_uniform(rng, (1.0, 3.0)), sensor_scale=_log_uniform(rng, (1.5, 3.0)),
            luma_noise=_uniform(rng, (2.0, 6.0)), chroma_noise=_uniform(rng, (4.0, 10.0)),
            seed=int(rng.integers(0, 2**31 - 1)), smooth=_uniform(rng, (15.0, 40.0)),
            sharpen=_uniform(rng, (0.5, 1.5)), jpeg=int(rng.integers(60, 86))))
    raise ValueError(f"unknown damage family {family!r}; choose from {DAMAGE_FAMILIES}")


def _vignette(shape: tuple[int, ...], strength: float) -> np.ndarray:
    """(H, W, 1) float32 gain: 1 at the centre, 1 - strength at the corners (smooth radial)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2  # 2 at corners
    return (1.0 - strength * np.clip(r2 / 2.0, 0.0, 1.0) ** 2)[..., None]


def _aged_look(image: np.ndarray, a: AgedPrint) -> np.ndarray:
    """Tone, fading, cast and vignette of an aged print: (H, W, 3) uint8 -> float32 0-255."""
    x = apply_tone(image, a.tone).astype(np.float32)
    x = _fade(x, a.fade, float(x.mean())) * _vignette(x.shape, a.vignette)
    return apply_tone(_to_uint8(x), "gray").astype(np.float32) if a.tone == "gray" else x


def disk_kernel(radius: float) -> np.ndarray:
    """(k, k) float32 kernel of a defocused lens: a disk of `radius` px (edge pixels weighted by
    their covered share, 4x supersampled), summing to 1."""
    k = 2 * int(math.ceil(radius - 0.5)) + 1  # the pixels the disk reaches
    fine = (np.arange(4 * k) + 0.5) / 4.0 - k / 2.0  # 4 sample positions per pixel, centred
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2 <= radius**2).astype(np.float32)
    kernel = inside.reshape(k, 4, k, 4).sum(axis=(1, 3))
    return kernel / kernel.sum()


def _phone_look(image: np.ndarray, p: PhoneSnap) -> np.ndarray:
    """Tone, uneven light and glare of a print photographed in a room: (H, W, 3) uint8 ->
    float32 0-255."""
    x = apply_tone(image, p.tone).astype(np.float32)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = ((xx / w - 0.5) * math.cos(p.angle) + (yy / h - 0.5) * math.sin(p.angle)) / math.sqrt(0.5)
    x = x * (1.0 - p.light * (along + 1.0) / 2.0)[..., None]
    if p.glare > 0:
        sigma = p.glare_size * math.hypot(h, w)
        d2 = (xx - p.glare_xy[0] * w) ** 2 + (yy - p.glare_xy[1] * h) ** 2
        x = x + (p.glare * np.exp(-d2 / (2 * sigma**2)))[..., None]
    return x


def _phone_capture(look: np.ndarray, p: PhoneSnap, shape: tuple[int, ...]) -> np.ndarray:
    """The phone's capture of a print's look (H, W, 3) float32 0-255 -> (H, W, 3) uint8 at the
    photo's size `shape`."""
    x = cv2.filter2D(look, -1, disk_kernel(p.defocus), borderType=cv2.BORDER_REFLECT)
    x = _resize(x, _scaled(shape, p.sensor_scale), cv2.INTER_AREA)
    rng = np.random.default_rng(p.seed)
    chroma = cv2.GaussianBlur(rng.normal(0.0, 1.0, x.shape).astype(np.float32), (0, 0), 1.5)
    chroma *= p.chroma_noise / max(float(chroma.std()), 1e-6)
    chroma -= chroma.mean(axis=2, keepdims=True)  # colour only: the channels' noise sums to 0
    x = x + chroma + rng.normal(0.0, p.luma_noise, x.shape[:2] + (1,)).astype(np.float32)
    x = cv2.bilateralFilter(np.clip(x, 0, 255).astype(np.float32), 5, p.smooth, 3.0)
    x = x + p.sharpen * (x - cv2.GaussianBlur(x, (0, 0), 1.2))
    small = _jpeg_420(_to_uint8(x), p.jpeg)
    return _to_uint8(_resize(small.astype(np.float32), shape[:2], cv2.INTER_CUBIC))


def _jpeg_420(x: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> JPEG round trip at `quality` with 4:2:0 chroma subsampling."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def apply_photo_damage(image: np.ndarray, damage: PhotoDamage) -> tuple[np.ndarray, np.ndarray]:
    """Damage a clean photo. image: (H, W, 3) uint8 RGB -> (damaged, truth), both (H, W, 3)
    uint8 RGB of the same size: truth is the clean photo with the damage's look (tone, fading,
    cast, vignette), so damaged and truth differ in detail only."""
    _check_rgb(image)
    if damage.crop_model is not None:
        return apply_degradation(image, damage.crop_model), apply_look(image, damage.crop_model)
    if damage.aged is not None:
        a = damage.aged
        look = _aged_look(image, a)
        small = _resize(look, _scaled(image.shape, a.print_scale), cv2.INTER_AREA)
        grain = Noise("grain", a.grain, True, a.grain_size, a.seed)
        scan = _resize(_add_noise(small, grain), image.shape[:2], cv2.INTER_CUBIC)
        scan = cv2.GaussianBlur(scan, (0, 0), a.scan_blur)
        damaged = _jpeg(_to_uint8(scan), a.jpeg)
        truth = _to_uint8(look)
        if a.tone == "gray":
            damaged = apply_tone(damaged, "gray")
        return damaged, truth
    if damage.phone is not None:
        look = _phone_look(image, damage.phone)
        damaged = _phone_capture(look, damage.phone, image.shape)
        if damage.phone.tone == "gray":
            damaged = apply_tone(damaged, "gray")
        return damaged, _to_uint8(look)
    t = damage.thumbnail
    small = _jpeg_420(_to_uint8(_resize(image.astype(np.float32), _scaled(image.shape, t.scale), t.interp)), t.jpeg1)
    small = _jpeg_420(small, t.jpeg2)
    return _to_uint8(_resize(small.astype(np.float32), image.shape[:2], t.interp_up)), image.copy()
