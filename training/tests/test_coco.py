"""COCO and YOLO reading/writing: round trips, pycocotools agreement, error messages."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from satsam_training.coco import (
    DatasetError,
    Frame,
    decode_segmentation,
    encode_mask,
    load_coco,
    load_split,
    load_yolo,
    mask_bbox,
    write_coco,
    write_yolo,
)

H, W = 40, 50


def _blob(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 255
    m[y0, x0] = 0  # not a plain rectangle
    return m


def _image(root: Path, name: str, value: int = 0, dtype=np.uint8) -> Path:
    path = root / "images" / "train" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.arange(H * W).reshape(H, W) % 200 + value).astype(dtype)
    cv2.imwrite(str(path), img)
    return path


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a background run, as COCO's iscrowd RLE."""
    flat = (mask > 0).astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _dataset(tmp_path: Path):
    """Frames covering every segmentation form, an empty frame and a bbox-only frame."""
    m1, m2 = _blob(5, 20, 10, 30), _blob(22, 35, 3, 12)
    m3 = np.zeros((H, W), np.uint8)
    cv2.fillPoly(m3, [np.array([[10, 10], [40, 12], [25, 35]], np.int32)], 255)
    poly = [[10.0, 10.0, 40.0, 12.0, 25.0, 35.0]]
    frames = [
        Frame(1, _image(tmp_path, "a.png"), W, H, [mask_bbox(m1), mask_bbox(m2)],
              [encode_mask(m1), _uncompressed_rle(m2)]),
        Frame(2, _image(tmp_path, "b.png"), W, H, [mask_bbox(m3)], [poly]),
        Frame(3, _image(tmp_path, "c.png"), W, H),
        Frame(4, _image(tmp_path, "d.png"), W, H, [(1.0, 2.0, 10.0, 5.0)], [None]),
    ]
    return frames, {"m1": m1, "m2": m2, "poly": poly}


def test_round_trip_all_segmentation_forms_and_pycocotools_agrees(tmp_path):
    frames, masks = _dataset(tmp_path)
    write_coco(tmp_path / "train.json", frames)
    loaded = load_split(tmp_path, "train")
    assert [f.id for f in loaded] == [1, 2, 3, 4]
    assert [f.file_name for f in loaded] == [f"images/train/{n}.png" for n in "abcd"]
    for orig, got in zip(frames, loaded):
        assert got.path == orig.path.resolve()
        assert got.boxes == [tuple(float(v) for v in b) for b in orig.boxes]
        assert got.is_empty == (not orig.boxes)
    # frame 1: compressed + uncompressed RLE, union of both
    assert np.array_equal(loaded[0].mask(), masks["m1"] | masks["m2"])
    assert loaded[0].segmentations[0]["counts"] and isinstance(loaded[0].segmentations[0]["counts"], str)
    assert isinstance(loaded[0].segmentations[1]["counts"], list)
    # empty frame: zeros; bbox-only frame: None
    assert loaded[2].mask().shape == (H, W) and not loaded[2].mask().any()
    assert loaded[3].mask() is None and not loaded[3].has_masks

    coco = COCO(str(tmp_path / "train.json"))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    for frame in loaded[:2]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[frame.id]))
        union = np.zeros((H, W), np.uint8)
        for ann, seg in zip(anns, frame.segmentations):
            ours = decode_segmentation(seg, H, W)
            assert np.array_equal(coco.annToMask(ann), ours)
            assert ann["area"] == pytest.approx(float(ours.sum()))
            union |= ours
        assert np.array_equal(union * 255, frame.mask())
    poly_mask = coco.annToMask(coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0])
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(masks["poly"], H, W)))
    assert np.array_equal(poly_mask, ref) and poly_mask.sum() > 100


def test_compressed_rle_round_trip_is_exact_and_bbox_matches_pycocotools():
    rng = np.random.default_rng(0)
    mask = (rng.random((H, W)) > 0.7).astype(np.uint8) * 255
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
    assert np.array_equal(decode_segmentation(rle, H, W) * 255, mask)
    ref = mask_utils.toBbox({"size": [H, W], "counts": rle["counts"].encode()})
    assert mask_bbox(mask) == tuple(float(v) for v in ref)
    assert mask_bbox(np.zeros((H, W))) is None


def test_sixteen_bit_and_colour_images_read_as_stored(tmp_path):
    p16 = _image(tmp_path, "w.png", value=1000, dtype=np.uint16)
    f = Frame(1, p16, W, H)
    img = f.image()
    assert img.dtype == np.uint16 and img.shape == (H, W) and img.max() >= 1000
    pc = tmp_path / "c.png"
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(pc), bgr)
    rgb = Frame(2, pc, W, H).image()
    assert rgb.shape == (H, W, 3) and rgb[0, 0, 0] == 255 and rgb[0, 0, 2] == 0
    with pytest.raises(DatasetError, match="labels say"):
        Frame(3, pc, W + 1, H, source="x.json").image()


def _write(tmp_path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def _good():
    return {"images": [{"id": 7, "file_name": "a.png", "width": W, "height": H}],
            "annotations": [{"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4]}],
            "categories": [{"id": 1, "name": "satellite"}]}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["images"][0].pop("width"), r"images\[0\] \(id 7\): missing 'width'"),
        (lambda d: d["images"][0].update(height=0), r"images\[0\] \(id 7\): height must be a positive integer"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\] \(id 7\): duplicate image id 7"),
        (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\] \(id 3\): image_id 99 is not in"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 3\): bbox must be"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), r"annotations\[0\] \(id 3\): bbox width"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [H + 1, W], "counts": "abc"}),
         r"annotations\[0\] \(id 3\): segmentation: RLE size"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]),
         r"annotations\[0\] \(id 3\): segmentation: polygon 0"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [H, W], "counts": [1, 2]}),
         r"annotations\[0\] \(id 3\): segmentation: uncompressed RLE counts sum"),
        (lambda d: d.pop("images"), r"no 'images' list"),
    ],
)
def test_errors_name_the_file_and_the_entry(tmp_path, edit, expected):
    data = _good()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(DatasetError, match=expected) as info:
        load_coco(path)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_split_are_reported(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="train.json: not valid JSON"):
        load_coco(path)
    with pytest.raises(FileNotFoundError, match=r"val.json: no such split file .*has: train"):
        load_split(tmp_path, "val")


def test_only_the_satellite_category_is_read_and_empty_segmentation_counts_as_absent(tmp_path):
    data = _good()
    data["categories"].append({"id": 2, "name": "debris"})
    data["annotations"].append({"id": 4, "image_id": 7, "category_id": 2, "bbox": [5, 5, 5, 5]})
    data["annotations"][0]["segmentation"] = []
    frames = load_coco(_write(tmp_path, data))
    assert frames[0].boxes == [(1.0, 2.0, 3.0, 4.0)]
    assert frames[0].segmentations == [None]
    data["categories"] = [{"id": 1, "name": "car"}, {"id": 2, "name": "debris"}]
    with pytest.raises(DatasetError, match="no category named 'satellite'"):
        load_coco(_write(tmp_path, data))


def test_write_refuses_images_outside_the_dataset(tmp_path):
    outside = tmp_path / "elsewhere.png"
    cv2.imwrite(str(outside), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="not inside the dataset directory"):
        write_coco(tmp_path / "ds" / "train.json", [Frame(1, outside, W, H)])


def test_yolo_round_trip_and_segment_lines(tmp_path):
    frames, _ = _dataset(tmp_path)
    labels = tmp_path / "labels"
    write_yolo(frames[:3], labels)
    assert (labels / "c.txt").read_text() == ""  # empty frame: empty file
    # frame d has no label file at all: an empty frame too
    (labels / "d.txt").unlink(missing_ok=True)
    # a segment line for a fifth image
    _image(tmp_path, "e.png")
    (labels / "e.txt").write_text("0 0.2 0.25 0.6 0.25 0.4 0.75\n\n")
    loaded = load_yolo(tmp_path / "images" / "train", labels)
    assert [Path(f.file_name).stem for f in loaded] == ["a", "b", "c", "d", "e"]
    for orig, got in zip(frames[:3], loaded[:3]):
        assert len(got.boxes) == len(orig.boxes)
        for a, b in zip(orig.boxes, got.boxes):
            assert np.allclose(a, b, atol=1e-5 * W)
        assert all(s is None for s in got.segmentations)
    assert loaded[3].is_empty
    seg_frame = loaded[4]
    assert seg_frame.boxes[0] == pytest.approx((10.0, 10.0, 20.0, 20.0))
    assert seg_frame.segmentations[0] == [[10.0, 10.0, 30.0, 10.0, 20.0, 30.0]]
    assert seg_frame.mask().sum() > 0
    # filtering by class
    (labels / "e.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    assert load_yolo(tmp_path / "images" / "train", labels, classes=[0])[4].is_empty


@pytest.mark.parametrize(
    "line, expected",
    [
        ("0 0.5 0.5 0.2", "expected 'class cx cy w h'"),
        ("0 0.5 0.5 1.2 0.2", r"normalised to \[0, 1\]"),
        ("x 0.5 0.5 0.2 0.2", "not numbers"),
        ("1.5 0.5 0.5 0.2 0.2", "class must be a non-negative integer"),
        ("0 0.5 0.5 0 0.2", "width and height must be positive"),
    ],
)
def test_yolo_errors_name_the_file_and_line(tmp_path, line, expected):
    _image(tmp_path, "a.png")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match=expected) as info:
        load_yolo(tmp_path / "images" / "train", labels)
    assert "a.txt line 2" in str(info.value)


def test_yolo_label_without_image_is_an_error(tmp_path):
    _image(tmp_path, "a.png")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "zzz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (labels / "classes.txt").write_text("satellite\n")
    with pytest.raises(DatasetError, match="without an image.*zzz.txt"):
        load_yolo(tmp_path / "images" / "train", labels)
