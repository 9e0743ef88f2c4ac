"""Dataset I/O of the training side: COCO writing and YOLO labels, on top of the
runtime's reader.

Reading COCO splits (:class:`Frame`, :func:`load_coco`, :func:`load_split`,
:func:`decode_segmentation`, ...) is :mod:`satsam_ros.dataset`, the one reader the
runtime's tools use too; it is imported here so the training package has one module
for dataset I/O. The format is described there. Written here:

* COCO JSON (:func:`write_coco`): ``file_name`` relative to the JSON's directory,
  ``area`` the segmentation's pixel count (else ``w * h``), annotation ids from 1,
  segmentations as compressed RLE strings (:func:`encode_mask`), one ``satellite``
  category.

YOLO labels (``load_yolo`` / ``write_yolo``): one ``<image stem>.txt`` per image,
one object per line, ``class cx cy w h`` normalised to [0, 1] by the image width and
height, or a YOLO segment line ``class x0 y0 x1 y1 ...`` (normalised polygon, at
least three points). A missing or empty label file is an empty frame.

Every error names the file and the offending entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from satsam_ros.core.imaging import IMAGE_SUFFIXES
from satsam_ros.dataset import (
    SPLITS,
    DatasetError,
    Frame,
    available_splits,
    check_segmentation,
    decode_segmentation,
    load_coco,
    load_split,
    read_image,
)

__all__ = [  # the reader's names (satsam_ros.dataset) with the writers of this module
    "CATEGORY", "IMAGE_SUFFIXES", "SPLITS", "DatasetError", "Frame", "available_splits", "coco_dict",
    "decode_segmentation", "encode_mask", "image_size", "load_coco", "load_split", "load_yolo", "mask_bbox",
    "place_image", "read_image", "write_coco", "write_json_atomic", "write_yolo",
]

CATEGORY = {"id": 1, "name": "satellite"}

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------- masks


def encode_mask(mask: np.ndarray) -> dict:
    """H x W mask (nonzero = foreground) -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    binary = np.asfortranarray((np.asarray(mask) > 0).astype(np.uint8))
    if binary.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {binary.shape}")
    rle = mask_utils.encode(binary)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> Optional[Box]:
    """Tight COCO box ``(x, y, w, h)`` of the nonzero pixels of an H x W mask; None if empty."""
    m = np.asarray(mask) > 0
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header (no pixel decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc}") from exc
    return int(height), int(width)


# --------------------------------------------------------------------------- frames


# --------------------------------------------------------------------------- COCO


def _json_segmentation(seg: Any) -> Any:
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        return {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
    return seg


def _segmentation_area(seg: Any, height: int, width: int) -> float:
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict) and not isinstance(seg["counts"], list):
        counts = seg["counts"]
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return float(mask_utils.area(rle))
    return float(decode_segmentation(seg, height, width).sum())


def coco_dict(frames: Iterable[Frame], root, info: Optional[dict] = None) -> dict:
    """Frames -> a COCO dict whose file_names are relative to ``root``.

    ``file_name`` is the frame's ``path`` relative to ``root`` (ValueError if the
    image lies outside it). ``area`` is the segmentation's pixel count when there is
    one, else ``w * h``. Annotation ids are numbered from 1 in order.
    """
    root = Path(root).resolve()
    images, annotations = [], []
    ann_id = 1
    for frame in frames:
        try:
            rel = Path(frame.path).resolve().relative_to(root)
        except ValueError:
            raise ValueError(f"image {frame.path} (id {frame.id}) is not inside the dataset directory {root}") from None
        images.append({"id": int(frame.id), "file_name": rel.as_posix(), "width": int(frame.width),
                       "height": int(frame.height)})
        segs = frame.segmentations or [None] * len(frame.boxes)
        if len(segs) != len(frame.boxes):
            raise ValueError(f"image id {frame.id}: {len(frame.boxes)} boxes but {len(segs)} segmentations")
        for box, seg in zip(frame.boxes, segs):
            x, y, w, h = (float(v) for v in box)
            ann = {"id": ann_id, "image_id": int(frame.id), "category_id": CATEGORY["id"], "bbox": [x, y, w, h],
                   "area": w * h, "iscrowd": 0}
            if seg is not None:
                try:
                    check_segmentation(seg, frame.height, frame.width)
                except ValueError as exc:
                    raise ValueError(f"image id {frame.id}, annotation {ann_id}: segmentation: {exc}") from exc
                ann["segmentation"] = _json_segmentation(seg)
                ann["area"] = _segmentation_area(seg, frame.height, frame.width)
            annotations.append(ann)
            ann_id += 1
    out = {"images": images, "annotations": annotations, "categories": [dict(CATEGORY)]}
    if info:
        out["info"] = info
    return out


def write_json_atomic(path, data: Any, indent: Optional[int] = None) -> Path:
    """Write JSON to ``path`` via a temporary file and a rename (never half-written)."""
    from .report import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(data, indent=indent) + "\n")


def write_coco(json_path, frames: Iterable[Frame], info: Optional[dict] = None) -> dict:
    """Write frames as a COCO JSON at ``json_path`` (file_names relative to its directory).

    The frames' images must already lie under the JSON's directory. Returns the dict
    written. See :func:`coco_dict` for the content.
    """
    json_path = Path(json_path)
    data = coco_dict(frames, json_path.parent, info=info)
    write_json_atomic(json_path, data)
    return data


# --------------------------------------------------------------------------- YOLO


def _list_images(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_yolo(images_dir, labels_dir, classes: Optional[Sequence[int]] = None) -> list[Frame]:
    """Read YOLO txt labels (see the module docstring) into frames.

    Frames are the images of ``images_dir`` sorted by name, with ids 1, 2, ...;
    ``file_name`` is relative to ``images_dir``. ``classes`` keeps only those class
    ids (default: every class is a satellite). Box lines give bbox-only annotations;
    segment lines give polygon segmentations (in pixels) and their tight boxes.
    Raises DatasetError naming the label file and line for malformed lines and for
    label files that have no image.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"YOLO images directory {images_dir} does not exist")
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"YOLO labels directory {labels_dir} does not exist")
    images = _list_images(images_dir)
    stems = {p.stem for p in images}
    orphans = sorted(p.name for p in labels_dir.glob("*.txt") if p.stem not in stems and p.name != "classes.txt")
    if orphans:
        raise DatasetError(f"{labels_dir}: label file(s) without an image in {images_dir}: {', '.join(orphans[:5])}")
    keep = None if classes is None else {int(c) for c in classes}
    frames = []
    for index, img_path in enumerate(images):
        height, width = image_size(img_path)
        frame = Frame(id=index + 1, path=img_path.resolve(), width=width, height=height,
                      file_name=img_path.name, source=str(labels_dir / f"{img_path.stem}.txt"))
        label = labels_dir / f"{img_path.stem}.txt"
        if label.is_file():
            for line_no, line in enumerate(label.read_text().splitlines(), start=1):
                parsed = _parse_yolo_line(line, width, height, f"{label} line {line_no}")
                if parsed is None:
                    continue
                cls, box, seg = parsed
                if keep is not None and cls not in keep:
                    continue
                frame.boxes.append(box)
                frame.segmentations.append(seg)
                frame.annotation_ids.append(line_no)
        frames.append(frame)
    return frames


def _parse_yolo_line(line: str, width: int, height: int, where: str):
    parts = line.split()
    if not parts:
        return None
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise DatasetError(f"{where}: not numbers: {line.strip()!r}") from None
    if not values[0].is_integer() or values[0] < 0:
        raise DatasetError(f"{where}: class must be a non-negative integer, got {parts[0]!r}")
    cls, coords = int(values[0]), values[1:]
    if any(not np.isfinite(v) or v < -1e-6 or v > 1 + 1e-6 for v in coords):
        raise DatasetError(f"{where}: coordinates must be normalised to [0, 1]: {line.strip()!r}")
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box width and height must be positive: {line.strip()!r}")
        return cls, ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height), None
    if len(coords) >= 6 and len(coords) % 2 == 0:
        xs = np.asarray(coords[0::2]) * width
        ys = np.asarray(coords[1::2]) * height
        poly = [float(v) for pair in zip(xs, ys) for v in pair]
        x0, y0 = float(xs.min()), float(ys.min())
        w, h = float(xs.max()) - x0, float(ys.max()) - y0
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: degenerate polygon: {line.strip()!r}")
        return cls, (x0, y0, w, h), [poly]
    raise DatasetError(
        f"{where}: expected 'class cx cy w h' or 'class x0 y0 x1 y1 x2 y2 ...', got {len(parts)} values"
    )


def write_yolo(frames: Iterable[Frame], labels_dir, cls: int = 0) -> list[Path]:
    """Write one YOLO box label file per frame (``<image stem>.txt``; empty for empty frames).

    Boxes are clipped to the image and written as ``cls cx cy w h`` with 6 decimals.
    Returns the files written.
    """
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for frame in frames:
        lines = []
        for x, y, w, h in frame.boxes:
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(frame.width), x + w), min(float(frame.height), y + h)
            cx, cy = (x0 + x1) / 2 / frame.width, (y0 + y1) / 2 / frame.height
            lines.append(f"{cls} {cx:.6f} {cy:.6f} {(x1 - x0) / frame.width:.6f} {(y1 - y0) / frame.height:.6f}")
        out = labels_dir / f"{Path(frame.path).stem}.txt"
        out.write_text("".join(line + "\n" for line in lines))
        written.append(out)
    return written


def place_image(src: Path, dst: Path, link: bool = True) -> None:
    """Put a copy of ``src`` at ``dst``: a hard link when allowed and possible, else a copy."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)
