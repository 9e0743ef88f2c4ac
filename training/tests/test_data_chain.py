"""The whole data chain: synth -> pseudo-label -> patches, through the CLI and the library.

SAM here is the tiny random model (plumbing only: real checkpoints are not reachable);
its masks are noise, so the selection rule is relaxed to let them through. The IoU
that pseudo-label reports is checked against an independent recomputation from the
written COCO files with pycocotools.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from satsam_training.cli import main
from satsam_training.coco import load_split
from satsam_training.patches import read_patch_index
from satsam_training.pseudo import AutoMaskConfig, SelectionRule, pseudo_label_dataset


def _union_masks(coco: COCO, image_id: int) -> np.ndarray:
    info = coco.loadImgs([image_id])[0]
    out = np.zeros((info["height"], info["width"]), bool)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        out |= coco.annToMask(ann) > 0
    return out


def recompute_iou(data: Path, out: Path, splits) -> tuple[float, dict]:
    """Mean IoU of the written pseudo-masks against the input's true masks, from the files alone."""
    ious = {}
    for split in splits:
        truth = COCO(str(data / f"{split}.json"))
        pseudo = COCO(str(out / f"{split}.json"))
        for image_id in pseudo.getImgIds():
            if not pseudo.getAnnIds(imgIds=[image_id]):
                continue  # empty frame
            p, t = _union_masks(pseudo, image_id), _union_masks(truth, image_id)
            ious[(split, image_id)] = np.count_nonzero(p & t) / np.count_nonzero(p | t)
    return float(np.mean(list(ious.values()))), ious


def _check_written(data: Path, out: Path, splits) -> dict:
    report = json.loads((out / "pseudo_iou.json").read_text())
    written = [r for r in report["rows"] if r["written"]]
    assert len(written) == 1
    mean, ious = recompute_iou(data, out, splits)
    assert written[0]["matched"] == len(ious)
    assert written[0]["mean_iou"] == pytest.approx(mean, abs=1e-12)
    per_frame = {(r["split"], r["image_id"]): r["iou"] for r in report["per_frame"]}
    assert per_frame.keys() == ious.keys()
    for key, value in ious.items():
        assert per_frame[key] == pytest.approx(value, abs=1e-12)
    # kept + dropped = all frames; boxes carried over unchanged; images present
    for split in splits:
        src = {f.id: f for f in load_split(data, split)}
        dst = load_split(out, split)
        st = report["splits"][split]
        assert st["kept"] == len(dst) and st["kept"] + st["dropped"] == st["frames"] == len(src)
        assert st["empty"] == sum(f.is_empty for f in src.values()) == sum(f.is_empty for f in dst)
        for f in dst:
            assert f.boxes == src[f.id].boxes and f.file_name == src[f.id].file_name
            assert f.path.is_file() and f.mask() is not None
    return report


def test_cli_synth_grabcut_patches(tmp_path, capsys):
    """The issue's acceptance path: synth, pseudo-label --method grabcut, patches --size 512."""
    data, pseudo, patches = tmp_path / "data", tmp_path / "pseudo", tmp_path / "patches"
    assert main(["synth", "--out", str(data), "--n-train", "10", "--n-val", "4", "--n-test", "0", "--seed", "7",
                 "--height", "160", "--width", "200", "--min-extent", "30"]) == 0
    assert "train: 10 frames" in capsys.readouterr().out
    assert main(["pseudo-label", str(data), "--out", str(pseudo), "--method", "grabcut"]) == 0
    printed = capsys.readouterr().out
    assert "| grabcut | - |" in printed and "| boxfill | - |" in printed
    assert (pseudo / "pseudo_iou.md").read_text().splitlines()[0].startswith("# Pseudo-mask IoU")
    report = _check_written(data, pseudo, ["train", "val"])
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["grabcut"]["matched"] >= 1
    assert rows["grabcut"]["mean_iou"] > rows["boxfill"]["mean_iou"]
    assert f"{rows['grabcut']['mean_iou']:.4f}" in printed

    assert main(["patches", str(pseudo), "--size", "512", "--out", str(patches)]) == 0
    assert "patches kept" in capsys.readouterr().out
    index = read_patch_index(patches)
    kept_labelled = report["splits"]["train"]["kept"] - report["splits"]["train"]["empty"]
    assert index["count"] >= kept_labelled and all(it["positive"] for it in index["items"])
    assert index["stats"]["frames"] == report["splits"]["train"]["kept"]
    assert index["stats"]["skipped_no_mask"] == 0
    assert (patches / index["items"][0]["image"]).is_file()


def test_cli_reports_errors_with_the_command_name(tmp_path):
    with pytest.raises(SystemExit, match=r"satsam-train pseudo-label: .*no train.json"):
        main(["pseudo-label", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "grabcut"])
    with pytest.raises(SystemExit, match=r"satsam-train patches: .*train.json: no such split file"):
        main(["patches", str(tmp_path), "--size", "512", "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit, match="satsam-train synth: empty fraction"):
        main(["synth", "--out", str(tmp_path / "s"), "--empty-fraction", "2"])


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    main(["synth", "--out", str(root / "data"), "--n-train", "4", "--n-val", "2", "--n-test", "0", "--seed", "3",
          "--height", "96", "--width", "120", "--min-extent", "16", "--empty-fraction", "0.2"])
    return root


@pytest.fixture(scope="module")
def second_checkpoint(small_data):
    """A second, different SAM: the tiny model with perturbed weights, saved as a project checkpoint."""
    import torch

    from satsam_ros.model import load_model, save_checkpoint

    model, meta = load_model("tiny")
    with torch.no_grad():
        for p in model.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return str(save_checkpoint(model, meta, small_data / "tiny2"))


@pytest.fixture(scope="module")
def noise_checkpoint(small_data):
    """The tiny architecture with transformers' own initialisation: its logits are ~1e-4
    of either sign, so a box prompt's mask at SAM's logit-0 threshold is noise inside
    every box (the ``tiny`` spec draws blobs, which some small boxes miss)."""
    from satsam_ros.model import SatsamMeta, random_model, save_checkpoint, tiny_config

    return str(save_checkpoint(random_model(tiny_config(), seed=0), SatsamMeta(), small_data / "noise"))


ANYTHING = SelectionRule(min_inside=0.0, min_box_iou=0.0, margin=0.0)


@pytest.mark.parametrize("method", ["box", "auto"])
def test_sam_chain_with_tiny_models(small_data, second_checkpoint, noise_checkpoint, method):
    data = small_data / "data"
    out = small_data / f"pseudo-{method}"
    auto = AutoMaskConfig(points_per_side=4, pred_iou_thresh=-1.0, stability_thresh=0.0, grid="frame")
    checkpoints = [noise_checkpoint] if method == "box" else ["tiny", second_checkpoint]
    report = pseudo_label_dataset(data, out, method=method, checkpoints=checkpoints, rule=ANYTHING, auto=auto)
    assert report.has_truth
    # one row per checkpoint, the written combination, the box-fill baseline
    expected = [(method, c) for c in checkpoints] + [(method, "all" if len(checkpoints) > 1 else checkpoints[0]),
                                                     ("boxfill", "-")]
    assert [(r["method"], r["checkpoint"]) for r in report.rows] == expected
    assert [r["written"] for r in report.rows].count(True) == 1
    labelled = sum(s["frames"] - s["empty"] for s in report.splits.values())
    written = report.rows[-2]
    assert written["frames"] == labelled
    # noise masks all pass the permissive rule, so every frame is kept
    assert written["matched"] == labelled and written["dropped"] == 0
    _check_written(data, out, ["train", "val"])
    # patches from the pseudo-labelled set
    assert main(["patches", str(out), "--size", "512", "--out", str(small_data / f"patches-{method}"),
                 "--keep-empty", "1.0"]) == 0
    idx = read_patch_index(small_data / f"patches-{method}")
    assert idx["count"] == 4 * idx["stats"]["frames"] == 4 * report.splits["train"]["kept"]


def test_strict_rule_drops_noise_masks_but_keeps_empty_frames(small_data):
    data = small_data / "data"
    out = small_data / "pseudo-strict"
    report = pseudo_label_dataset(data, out, method="box", checkpoints=["tiny"],
                                  rule=SelectionRule(min_inside=1.0, min_box_iou=0.99, margin=0.0))
    for split, st in report.splits.items():
        assert st["kept"] == st["empty"]  # random masks never match a box that well
        assert st["dropped"] == st["frames"] - st["empty"]
        assert len(load_split(out, split)) == st["empty"]
    assert report.rows[0]["matched"] == 0 and report.rows[0]["mean_iou"] is None


def test_auto_quality_filters_drop_low_confidence_candidates(small_data):
    """SAM's default filters (predicted IoU 0.88, stability 0.95) reject every mask of a random model."""
    from satsam_training.pseudo import SamPrompter

    frame = next(f for f in load_split(small_data / "data", "train") if not f.is_empty)
    prompter = SamPrompter("tiny")
    strict = prompter.auto_select(frame.image(), frame.boxes, AutoMaskConfig(points_per_side=4), ANYTHING)
    assert [m for m, _ in strict] == [None] * len(frame.boxes)
    loose = AutoMaskConfig(points_per_side=3, pred_iou_thresh=-1.0, stability_thresh=0.0, grid="box")
    picked = prompter.auto_select(frame.image(), frame.boxes, loose, ANYTHING)
    assert len(picked) == len(frame.boxes)
    for mask, sel in picked:
        assert mask is not None and mask.shape == (frame.height, frame.width) and sel.index is not None
