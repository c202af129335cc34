"""Decode and encode album photos without losing what the family cares about.

A decoded `Photo` holds the pixels *as the viewer sees them* (EXIF orientation applied once) and
everything needed to write a faithful copy: ICC profile, EXIF (Orientation reset to 1 so the copy
never rotates twice), DPI, JPEG quantisation tables and chroma subsampling (so a re-encoded JPEG
keeps the source's quality instead of silently degrading it), and the file's times.

Pixel layouts: (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; dtype uint8,
or uint16 for 16-bit PNG/TIFF (composited and written back in 16 bits).
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from albumfix.atomic import atomic_write_bytes

# Formats albumfix reads and writes, by lower-case suffix.
SUFFIX_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP", ".heic": "HEIF", ".heif": "HEIF",
}
EXIF_ORIENTATION = 0x0112
# A TIFF's getexif() is its first IFD, layout tags included (size, samples, photometric, strips,
# compression...); they describe the source's pixels, and written over the output's own they make
# it unreadable (an RGBX, LA or Lab TIFF, say). The ICC profile (34675) travels on its own.
TIFF_LAYOUT_TAGS = frozenset({254, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320,
                              322, 323, 324, 325, 338, 339, 529, 530, 531, 532, 34675})


class ImageDecodeError(Exception):
    """A file could not be decoded; the message is a one-line reason for the report."""


@dataclass
class Photo:
    """A decoded photo: pixels (see module docstring) plus the metadata to carry to the output."""

    pixels: np.ndarray
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_qtables: dict | None = None
    jpeg_subsampling: int | None = None
    webp_lossless: bool = False
    info: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def rgb8(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB view for analysis: grey expanded, alpha dropped, 16 bit scaled down."""
        px = self.pixels
        if px.dtype == np.uint16:
            px = (px >> 8).astype(np.uint8)
        if px.ndim == 2:
            px = px[:, :, None]
        if px.shape[2] in (1, 2):
            px = np.repeat(px[:, :, :1], 3, axis=2)
        return np.ascontiguousarray(px[:, :, :3])


def heif_available() -> bool:
    """True when pillow-heif is installed; registers its opener with Pillow."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def set_max_megapixels(megapixels: float) -> None:
    """Decompression-bomb guard: photos above this size are refused with a clear reason."""
    Image.MAX_IMAGE_PIXELS = int(megapixels * 1_000_000)


def decode(path: Path) -> Photo:
    """Read one photo. Raises ImageDecodeError with a one-line reason on any failure."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we refuse above the limit
            return _decode_bytes(data)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"image too large ({exc}); raise --max-megapixels if you trust this file"
        ) from exc
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a readable image: unknown or corrupt format") from exc
    except (OSError, ValueError, SyntaxError, struct.error, zlib.error, EOFError) as exc:
        raise ImageDecodeError(f"not a readable image: {exc}") from exc


def _decode_bytes(data: bytes) -> Photo:
    with Image.open(io.BytesIO(data)) as im:
        if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"{im.width}x{im.height} = {im.width * im.height / 1e6:.0f} MP, limit "
                f"{Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP"
            )
        fmt = im.format or "PNG"
        exif = im.getexif()
        orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
        photo = Photo(
            pixels=np.zeros((0, 0), np.uint8),
            format=fmt,
            icc_profile=im.info.get("icc_profile"),
            dpi=_dpi(im),
        )
        if fmt == "JPEG":
            photo.jpeg_qtables = getattr(im, "quantization", None)
            from PIL import JpegImagePlugin

            photo.jpeg_subsampling = JpegImagePlugin.get_sampling(im)
        if fmt == "WEBP":
            photo.webp_lossless = b"VP8L" in data[:64]
        im.load()
        pixels = _pixels(im, data, photo)
    if fmt == "TIFF":
        for tag in TIFF_LAYOUT_TAGS & set(exif):
            del exif[tag]
    if len(exif):
        exif[EXIF_ORIENTATION] = 1
        photo.exif = exif.tobytes()
    photo.pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    if photo.pixels.size == 0:
        raise ImageDecodeError("image has no pixels")
    return photo


def _dpi(im: Image.Image) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    if not dpi:
        return None
    return (float(dpi[0]), float(dpi[1]))


def _pixels(im: Image.Image, data: bytes, photo: Photo) -> np.ndarray:
    """Pixels in one of the module's layouts; converts CMYK/palette/1-bit/float modes."""
    if im.format in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA", "I;16", "I;16B", "I"):
        deep = _decode_16bit(data)
        if deep is not None:
            return deep
    mode = im.mode
    if mode == "CMYK":
        return np.asarray(_cmyk_to_srgb(im, photo))
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in im.info or mode == "PA"
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        return np.clip(arr, 0, 65535).astype(np.uint16)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if "A" in mode else "RGB"))


def _decode_16bit(data: bytes) -> np.ndarray | None:
    """16-bit PNG/TIFF pixels via OpenCV (Pillow reduces 16-bit RGB to 8 bits); None otherwise."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def _cmyk_to_srgb(im: Image.Image, photo: Photo) -> Image.Image:
    """CMYK to sRGB through the embedded profile when there is one; the output carries sRGB."""
    if photo.icc_profile:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(photo.icc_profile))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            photo.icc_profile = ImageCms.ImageCmsProfile(dst).tobytes()
            return out
        except (ImageCms.PyCMSError, OSError):
            pass
    photo.icc_profile = None
    return im.convert("RGB")


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to (H, W[, C]) pixels, as a viewer would."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.rot90(a, k=1)[::-1, :],
        8: lambda a: np.rot90(a, k=1),
    }
    return ops[orientation](pixels) if orientation in ops else pixels


def encode(photo: Photo, pixels: np.ndarray, suffix: str) -> bytes:
    """Encode `pixels` (same layout rules as Photo.pixels) in the format of `suffix`,
    carrying the photo's ICC, EXIF (Orientation = 1), DPI and JPEG quality."""
    fmt = SUFFIX_FORMATS[suffix.lower()]
    if pixels.dtype == np.uint16 and (pixels.ndim == 3 or fmt == "TIFF"):
        return _encode_16bit(photo, pixels, fmt)
    im = _to_pil(pixels)
    params: dict = {}
    if photo.icc_profile:
        params["icc_profile"] = photo.icc_profile
    if photo.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "HEIF"):
        params["exif"] = photo.exif
    if photo.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        params["dpi"] = photo.dpi
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            im = im.convert(im.mode[:-1])
        if photo.jpeg_qtables:
            params["qtables"] = [photo.jpeg_qtables[k] for k in sorted(photo.jpeg_qtables)]
            if photo.jpeg_subsampling is not None and photo.jpeg_subsampling >= 0:
                params["subsampling"] = photo.jpeg_subsampling
        else:
            params["quality"] = 95
    elif fmt == "WEBP":
        params.update(lossless=True) if photo.webp_lossless else params.update(quality=95)
    elif fmt == "TIFF":
        params["compression"] = "tiff_lzw"
    elif fmt == "HEIF":
        heif_available()
        params["quality"] = 95
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _to_pil(pixels: np.ndarray) -> Image.Image:
    """Pillow infers L / I;16 / LA / RGB / RGBA from the array's shape and dtype."""
    return Image.fromarray(np.ascontiguousarray(pixels))


def _encode_16bit(photo: Photo, pixels: np.ndarray, fmt: str) -> bytes:
    """16-bit colour PNG/TIFF, which Pillow cannot write: OpenCV/tifffile plus our metadata."""
    if fmt == "TIFF":
        import tifffile

        buf = io.BytesIO()
        kwargs: dict = {"photometric": "minisblack" if pixels.ndim == 2 else "rgb"}
        if photo.icc_profile:
            kwargs["iccprofile"] = photo.icc_profile
        if photo.dpi:
            kwargs["resolution"] = photo.dpi
            kwargs["resolutionunit"] = "INCH"
        tifffile.imwrite(buf, pixels, compression="zlib", **kwargs)
        return buf.getvalue()
    import cv2

    bgr = pixels
    if pixels.shape[2] == 3:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.shape[2] == 4:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ImageDecodeError("could not encode 16-bit PNG")
    return _png_with_chunks(encoded.tobytes(), photo)


def _png_with_chunks(png: bytes, photo: Photo) -> bytes:
    """Insert iCCP, pHYs and eXIf chunks right after IHDR of an encoded PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    extra = b""
    if photo.icc_profile:
        extra += chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(photo.icc_profile))
    if photo.dpi:
        ppm = [int(round(d / 0.0254)) for d in photo.dpi]
        extra += chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1))
    if photo.exif:
        exif = photo.exif[6:] if photo.exif.startswith(b"Exif\x00\x00") else photo.exif
        extra += chunk(b"eXIf", exif)
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + extra + png[ihdr_end:]


def write_photo(photo: Photo, pixels: np.ndarray, target: Path, source_stat: os.stat_result) -> None:
    """Encode and write atomically to `target`, then give it the source file's times."""
    atomic_write_bytes(target, encode(photo, pixels, target.suffix))
    os.utime(target, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))

