"""The `satsam` command: detect on files and directories, demo, help."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.tools.cli import main


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    frame, _ = synthetic_frame(1)
    cv2.imwrite(str(d / "a.png"), frame)
    cv2.imwrite(str(d / "b.png"), cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(d / "c16.png"), frame.astype(np.uint16) * 257)
    (d / "broken.png").write_bytes(b"this is not a png")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d


def test_detect_directory_writes_four_files_per_image(image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["detect", str(image_dir), "--out", str(out), "--model", "tiny", "--device", "cpu",
               "--threshold", "0.5"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "not a readable image" in err
    boxes_seen = 0
    for stem in ("a", "b", "c16"):
        mask = cv2.imread(str(out / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        prob = cv2.imread(str(out / f"{stem}.prob.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / f"{stem}.overlay.png"), cv2.IMREAD_UNCHANGED)
        info = json.loads((out / f"{stem}.json").read_text())
        assert mask.shape == (512, 641) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert prob.shape == (512, 641) and prob.dtype == np.uint16
        assert overlay.shape == (512, 641, 3)
        assert info["threshold"] == 0.5 and info["patches"] == 4 and "total" in info["timings"]
        assert info["backend"] == "onnxruntime"  # the default backend, auto, on a CPU
        # the mask on disk is the probability on disk thresholded (up to 16-bit rounding)
        agree = (mask > 0) == (prob.astype(np.float64) / 65535.0 > 0.5)
        assert agree.mean() > 0.999
        # the boxes are the mask's connected components (8-connectivity), best score first
        count, _labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
        components = sorted((int(x), int(y), int(x + w), int(y + h), int(a)) for x, y, w, h, a in stats[1:count])
        assert sorted((b["x0"], b["y0"], b["x1"], b["y1"], b["area"]) for b in info["boxes"]) == components
        scores = [b["score"] for b in info["boxes"]]
        assert scores == sorted(scores, reverse=True) and all(0.5 < s <= 1.0 for s in scores)
        boxes_seen += len(components)
    assert boxes_seen > 0, "the check above compared no boxes"
    assert not (out / "broken.mask.png").exists()


def test_detect_missing_file_is_named(tmp_path, capsys):
    rc = main(["detect", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 1
    assert "nope.png: no such file" in capsys.readouterr().err


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["detect", str(tmp_path), "--out", str(tmp_path), "--size", "300"])
    assert err.value.code == 2


def test_bad_model_path_is_named(image_dir, tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        main(["detect", str(image_dir), "--out", str(tmp_path / "o"), "--model", "/no/such/ckpt"])


def test_demo_prints_latency_table(capsys):
    assert main(["demo", "--sizes", "512", "1024", "--frames", "2", "--device", "cpu", "--no-bag",
                 "--cascade", "off"]) == 0
    out = capsys.readouterr().out
    assert "patches" in out and "median s/frame" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("512", "1024"))]
    assert [r[:2] for r in rows] == [["512", "4"], ["1024", "16"]] and all(r[-1] == "off" for r in rows)
    assert all(float(r[2]) > 0 for r in rows)
    # the cascade at 1024: the coarse grid's 4 patches first, then only what they choose
    assert main(["demo", "--sizes", "1024", "--frames", "2", "--device", "cpu", "--no-bag", "--cascade", "on"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("1024"))
    assert 4 <= float(row[1]) < 20 and " ".join(row[5:]).startswith("512 first, margin")
    # its margin and patch cap reach the Detector
    assert main(["demo", "--sizes", "1024", "--frames", "2", "--device", "cpu", "--no-bag", "--cascade", "on",
                 "--cascade-margin", "8", "--cascade-max-patches", "2"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("1024"))
    assert float(row[1]) <= 4 + 2 and " ".join(row[5:]) == "512 first, margin 8 px, at most 2 patches"


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "satsam_ros.tools.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "detect" in out.stdout and "demo" in out.stdout


def test_demo_replays_a_bag_through_the_live_node(tmp_path, capsys):
    """The main job end to end: latency table, then a cached synthetic bag through the
    installed node, with the bag evaluation's summary table printed."""
    work = tmp_path / "demo"
    args = ["demo", "--sizes", "512", "--frames", "1", "--device", "cpu", "--bag-frames", "4", "--work", str(work)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Frames sent / answered / dropped" in out and "| 4 / 4 / 0" in out
    assert (work / "synth-4.bag" / "metadata.yaml").is_file()  # the training generator's frames
    assert "satsam_training's generator" in out
    assert (work / "bag-eval" / "report.md").is_file()
    metrics = json.loads((work / "bag-eval" / "metrics.json").read_text())
    assert metrics["frames_sent"] == 4
    # a second run reuses the cached bag
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().out
