"""The README's before/after picture (`make readme-figure`): restores an album with the shipped
weights through the real command line and draws, for every restored face, the face in the
original photo | the same region of the restored photo | the exemplar that guided it (or
"no guide"). Regenerated, never edited by hand.

python tools/readme_figure.py [ALBUM] [OUT_IMAGE] [--panel PX]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

COLUMNS = ("before", "after", "guided by")
MARGIN = 0.35  # of the face box's side, added around it on each side
LABEL_PX = 28  # height of the header row
BACKGROUND = (255, 255, 255)
NO_GUIDE_GREY = (200, 200, 200)


def restore_album(album: Path, out: Path) -> dict:
    """Runs `albumfix restore ALBUM -o OUT --json -q` with the shipped weights; its JSON summary."""
    result = subprocess.run([sys.executable, "-m", "albumfix.cli", "restore", str(album), "-o", str(out),
                             "--json", "-q"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"albumfix restore failed ({result.returncode}): {result.stderr.strip()}")
    return json.loads(result.stdout)


def face_region(photo: Path, box: list[float], panel: int) -> Image.Image:
    """The square around a face box (x0, y0, x1, y1 in pixels of the upright photo: EXIF orientation
    applied, as albumfix reads it), widened by MARGIN, as panel x panel."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    square = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    with Image.open(photo) as image:
        return ImageOps.exif_transpose(image).convert("RGB").crop(square).resize((panel, panel), Image.LANCZOS)


def no_guide_panel(panel: int, font: ImageFont.ImageFont) -> Image.Image:
    """The grey panel of a face restored without an exemplar."""
    image = Image.new("RGB", (panel, panel), NO_GUIDE_GREY)
    ImageDraw.Draw(image).text((panel / 2, panel / 2), "no guide", fill=(90, 90, 90), font=font, anchor="mm")
    return image


def figure(summary: dict, album: Path, out: Path, panel: int) -> Image.Image:
    """Rows of before | after | guided by, one per restored face (photos in path order)."""
    font = ImageFont.load_default(size=LABEL_PX * 2 // 3)
    faces = {f["id"]: (p["path"], f) for p in summary["photos"] for f in p["faces"]}
    rows = []
    for photo in sorted(summary["photos"], key=lambda p: p["path"]):
        for face in photo["faces"]:
            if "restored" not in face:
                continue
            exemplar = face["restored"]["exemplar"]
            guide = (face_region(album / faces[exemplar][0], faces[exemplar][1]["box"], panel) if exemplar
                     else no_guide_panel(panel, font))
            rows.append((face_region(album / photo["path"], face["box"], panel),
                         face_region(out / photo["path"], face["box"], panel), guide))
    if not rows:
        raise SystemExit("no face was restored: nothing to draw")
    sheet = Image.new("RGB", (len(COLUMNS) * panel, LABEL_PX + len(rows) * panel), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(COLUMNS):
        draw.text((c * panel + panel / 2, LABEL_PX / 2), label, fill=(0, 0, 0), font=font, anchor="mm")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(image, (c * panel, LABEL_PX + r * panel))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("album", nargs="?", type=Path, default=Path("sample_album"))
    parser.add_argument("out_image", nargs="?", type=Path, default=Path("docs/before-after.jpg"))
    parser.add_argument("--panel", type=int, default=224, help="side of each face panel in pixels")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "restored"
        sheet = figure(restore_album(args.album, out), args.album, out, args.panel)
    args.out_image.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out_image, quality=90)
    print(f"{args.out_image}: {sheet.size[1] // args.panel} faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
