"""Faces found in real old photos against hand labels: recall, false detections, seconds.

Runs albumfix's own analysis as `albumfix scan` runs it (`albumfix.stages.models.Models(Settings())
.analyzer()`, then `albumfix.stages.analyse.locate_faces`: locate, and search_more in a photo with
a damaged face) on every photo of the labels file, and scores the faces found against the labels
(benchmarks/data/real-old-photos-faces.json, boxes in photo px after EXIF orientation).

A detection matches a label when their IoU is >= 0.3 or the detection's centre lies inside the
label box; each label and each detection is matched at most once (best IoU first). Detections
that match no label are false detections; labels marked "unsure" are left out of recall, and a
detection matching one is not counted false. For each face found the line shows what the plan
would do with it (`albumfix.faces.quality.decide_action` at the default settings): faces turned
too far or too small are found and left, with that reason.

The same on an album of the album benchmark (`albumfix eval --albums DIR` builds DIR/manifest.json
and DIR/album/: the true boxes of every face; faces grouped by damage family instead of pose), and
the time alone on a folder of photos (a scan's detection cost; no labels). --dlib-alone runs the
analyzer with dlib's detector alone (no MTCNN pass: the detection of analysis version 5) in the
same process, for a before/after under the same machine load.

    nice -n 19 .venv/bin/python benchmarks/bench_old_photo_faces.py
    nice -n 19 .venv/bin/python benchmarks/bench_old_photo_faces.py --dlib-alone --json runs/old-faces-v5.json
    nice -n 19 .venv/bin/python benchmarks/bench_old_photo_faces.py --album runs/albums-diag
    nice -n 19 .venv/bin/python benchmarks/bench_old_photo_faces.py --folder ../shared/data/faces/lfw --limit 300
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "benchmarks" / "data" / "real-old-photos-faces.json"
PHOTOS = REPO.parent / "shared" / "data" / "real-old-photos"
MATCH_IOU = 0.3
SMALL_FACE = 24  # px: the "every face of 24 px or more"


def match(labels: list[dict], boxes: list[tuple[float, float, float, float]]) -> dict[int, int]:
    """labels: [{"box": [x0, y0, x1, y1], ...}], boxes: detections -> {label index: box index},
    pairs (IoU >= MATCH_IOU or the box centre inside the label) taken best IoU first."""
    from albumfix.faces.analyzer import box_iou

    pairs = []
    for i, lab in enumerate(labels):
        lx0, ly0, lx1, ly1 = lab["box"]
        for j, b in enumerate(boxes):
            iou = box_iou(lab["box"], b)
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if iou >= MATCH_IOU or (lx0 <= cx <= lx1 and ly0 <= cy <= ly1):
                pairs.append((iou, i, j))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def album_labels(album: Path) -> dict:
    """An album benchmark folder -> a labels document: every face's true box, grouped by the
    damage family of its photo ("undamaged" for the album's sharp photos)."""
    photos = {}
    for entry in json.loads((album / "manifest.json").read_text()):
        photos[entry["path"]] = [{"box": f["box"], "pose": entry["family"] or "undamaged",
                                  "width": round(f["box"][2] - f["box"][0])} for f in entry["faces"]]
    return {"photos": photos}


def folder_labels(folder: Path, limit: int) -> dict:
    """The first `limit` photos of a folder (sorted, recursive), without labels (None)."""
    suffixes = {".jpg", ".jpeg", ".png"}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)[:limit]
    return {"photos": {str(p.relative_to(folder)): None for p in paths}}


def run(doc: dict, photos: Path, only: list[str] | None = None, dlib_alone: bool = False,
        verbose: bool = True) -> dict:
    """Analyse every photo of a labels document; -> {"photos": per-photo records, "summary":
    totals}. A photo whose labels are None is timed and its faces counted, not scored."""
    from albumfix.faces.quality import decide_action
    from albumfix.settings import Settings
    from albumfix.stages.analyse import PhotoToAnalyse, locate_faces
    from albumfix.stages.models import Models

    settings = Settings()
    analyzer = Models(settings).analyzer()
    if dlib_alone:
        analyzer.detector.small_faces = None
    records = []
    for rel, labels in doc["photos"].items():
        if only and not any(o in rel for o in only):
            continue
        start = time.perf_counter()
        located = locate_faces(analyzer, PhotoToAnalyse(digest=rel, relpath=rel, path=photos / rel))
        seconds = time.perf_counter() - start
        boxes = [tuple(f.box) for f in located.faces]
        if labels is None:
            records.append({"photo": rel, "seconds": round(seconds, 3), "faces": len(boxes),
                            "detectors": [f.detector for f in located.faces]})
            continue
        matched = match(labels, boxes)
        found = []
        for j, (face, q) in enumerate(zip(located.faces, located.qualities)):
            label = next((i for i, k in matched.items() if k == j), None)
            decision = decide_action(q, restore_mode=settings.restore, min_face_size=settings.min_face_size)
            found.append({"box": [round(v, 1) for v in face.box], "detector": face.detector,
                          "score": round(float(face.score), 3), "label": label,
                          "yaw_deg": round(float(q.yaw_deg), 1), "action": decision.action,
                          "reason": decision.reason})
        records.append({"photo": rel, "seconds": round(seconds, 2), "labels": labels,
                        "matched": {str(i): j for i, j in matched.items()}, "found": found})
        if not verbose:
            continue
        print(f"{rel[:60]:60s} {seconds:6.1f} s  labels {len(labels):2d}  found {len(found):2d}  "
              f"matched {len(matched):2d}", flush=True)
        for f in found:
            tag = "false" if f["label"] is None else f"label {f['label']}"
            print(f"    {f['detector']:10s} {str(f['box']):34s} {tag:9s} {f['action']:8s} {f['reason']}")
        for i, lab in enumerate(labels):
            if i not in matched:
                print(f"    missed {lab['pose']:13s} {lab['width']:4d} px {lab['box']}"
                      + (" (unsure)" if lab.get("unsure") else ""))
    if all("faces" in r for r in records):
        seconds = sum(r["seconds"] for r in records)
        by = {}
        for r in records:
            for d in r["detectors"]:
                by[d] = by.get(d, 0) + 1
        summary = {"photos": len(records), "faces": sum(r["faces"] for r in records), "by_detector": by,
                   "photos_without_face": sum(1 for r in records if not r["faces"]),
                   "seconds": round(seconds, 1), "seconds_per_photo": round(seconds / max(1, len(records)), 3)}
        return {"photos": records, "summary": summary}
    return {"photos": records, "summary": summarise(records)}


def summarise(records: list[dict]) -> dict:
    """Recall overall, of faces >= SMALL_FACE px and per pose (sure labels only), false
    detections (matching no label), faces found of unsure labels, total and mean seconds."""
    def ratio(hit: int, n: int) -> dict:
        return {"found": hit, "of": n, "recall": round(hit / n, 3) if n else None}

    groups: dict[str, list[int]] = {}
    false = unsure_found = unsure = 0
    for r in records:
        matched = {int(i) for i in r["matched"]}
        for i, lab in enumerate(r["labels"]):
            if lab.get("unsure"):
                unsure += 1
                unsure_found += i in matched
                continue
            for key in ("all", f">={SMALL_FACE}px" if lab["width"] >= SMALL_FACE else f"<{SMALL_FACE}px",
                        f"pose {lab['pose']}"):
                groups.setdefault(key, [0, 0])
                groups[key][0] += i in matched
                groups[key][1] += 1
        false += sum(1 for f in r["found"] if f["label"] is None)
    seconds = sum(r["seconds"] for r in records)
    return {"recall": {k: ratio(*v) for k, v in sorted(groups.items())},
            "false_detections": false, "unsure_found": f"{unsure_found}/{unsure}",
            "faces_left": sum(1 for r in records for f in r["found"]
                              if f["label"] is not None and f["action"] == "skip"),
            "seconds": round(seconds, 1), "seconds_per_photo": round(seconds / max(1, len(records)), 2),
            "photos": len(records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="folder the labels' paths are relative to")
    parser.add_argument("--only", nargs="*", help="photos whose path contains one of these")
    parser.add_argument("--album", type=Path, help="an album benchmark folder (manifest.json, album/) "
                        "instead of the labels")
    parser.add_argument("--folder", type=Path, help="time detection on this folder's photos (no labels)")
    parser.add_argument("--limit", type=int, default=1000, help="photos of --folder (default 1000)")
    parser.add_argument("--dlib-alone", action="store_true", help="no MTCNN pass (analysis version 5's detection)")
    parser.add_argument("--json", type=Path, help="write the per-photo records and the summary here")
    args = parser.parse_args(argv)
    if args.album:
        doc, photos = album_labels(args.album), args.album / "album"
    elif args.folder:
        doc, photos = folder_labels(args.folder, args.limit), args.folder
    else:
        doc, photos = json.loads(args.labels.read_text()), args.photos
    result = run(doc, photos, args.only, args.dlib_alone, verbose=not (args.album or args.folder))
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
