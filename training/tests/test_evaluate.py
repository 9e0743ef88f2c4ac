"""satsam-train evaluate: the metrics JSON, the files it writes, and agreement with the
Detector + metric applied frame by frame."""

import json

import pytest
from _fitdata import make_coco_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.cli import main
from satsam_training.coco import load_split

from satsam_ros.core.metrics import frame_correct, frame_iou
from satsam_ros.model import SatsamMeta, random_model, save_checkpoint, tiny_config
from satsam_ros.runtime import open_detector

FIELDS = ("accuracy", "mean_iou", "false_alarm_rate", "miss_rate", "seconds_median", "seconds_p95", "frames",
          "correct", "empty_frames", "nonempty_frames", "false_alarms", "misses", "size", "threshold", "model",
          "split", "backend", "device")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_coco_dir(tmp_path_factory.mktemp("evalcoco"), splits=("test",), count=4, empty=2,
                         height=96, width=120)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("evalckpt") / "ckpt"
    return save_checkpoint(random_model(tiny_config(image_size=64), seed=1), SatsamMeta(threshold=0.65), path)


def test_evaluate_json_and_outputs(data, ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", str(ckpt), "--data", str(data), "--size", "512", "--threshold", "0.5", "--json",
               "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    for key in FIELDS:
        assert key in result, key
    assert result["frames"] == 4 and result["empty_frames"] == 2 and result["size"] == 512
    assert result["threshold"] == 0.5 and result["split"] == "test"
    assert result["seconds_median"] > 0 and result["seconds_p95"] >= result["seconds_median"]

    # the same numbers from the Detector and the metric, frame by frame
    det = open_detector(str(ckpt), backend="torch", device="cpu", size=512, threshold=0.5)
    frames = load_split(data, "test")
    preds = [det.detect(f.image()).mask for f in frames]
    correct = [frame_correct(p, f.mask()) for p, f in zip(preds, frames)]
    assert result["correct"] == sum(correct)
    assert result["accuracy"] == pytest.approx(sum(correct) / 4)
    nonempty = [frame_iou(p, f.mask()) for p, f in zip(preds, frames) if not f.is_empty]
    assert result["mean_iou"] == pytest.approx(sum(nonempty) / len(nonempty))
    alarms = sum(bool(p.any()) for p, f in zip(preds, frames) if f.is_empty)
    assert result["false_alarms"] == alarms and result["false_alarm_rate"] == pytest.approx(alarms / 2)

    assert json.loads((out / "metrics.json").read_text())["accuracy"] == result["accuracy"]
    table = (out / "table.md").read_text()
    assert "| Image size | Accuracy | Runtime (s/frame) |" in table
    assert f"| 512 x 512 | {100 * result['accuracy']:.1f} % | {result['seconds_median']:.3f} |" in table
    assert len((out / "per_frame.csv").read_text().strip().splitlines()) == 5
    assert (out / "examples.png").stat().st_size > 1000


def test_evaluate_uses_the_checkpoint_size_and_threshold_and_run_dirs(data, tmp_path, capsys):
    run = tmp_path / "run"
    meta = SatsamMeta(size=1024, threshold=0.42)
    save_checkpoint(random_model(tiny_config(image_size=64), seed=2), meta, run / "model")
    rc = main(["evaluate", str(run), "--data", str(data), "--json", "--out", str(tmp_path / "e"), "--no-progress",
               "--examples", "0"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["size"] == 1024 and result["threshold"] == pytest.approx(0.42)
    assert result["encoder_input_size"] == 64 and result["model_trained_size"] == 1024
    assert not (tmp_path / "e" / "examples.png").exists()


def test_evaluate_accepts_tiny(tmp_path, capsys):
    one = make_coco_dir(tmp_path / "one", splits=("test",), count=1, empty=0, height=64, width=64)
    assert main(["evaluate", "tiny", "--data", str(one), "--json", "--out", str(tmp_path / "e"), "--no-progress",
                 "--examples", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny" and result["frames"] == 1 and result["encoder_input_size"] == 256
    assert result["threshold"] == pytest.approx(0.65)


def test_evaluate_errors_name_the_problem(data, tmp_path):
    with pytest.raises(SystemExit, match="no such split file"):
        main(["evaluate", "tiny", "--data", str(data), "--split", "val", "--no-progress"])
    with pytest.raises(SystemExit, match="no such directory"):
        main(["evaluate", str(tmp_path / "missing"), "--data", str(data), "--out", str(tmp_path / "x"),
              "--no-progress"])


def test_evaluate_reports_the_error_budget(data, ckpt, tmp_path, capsys):
    """metrics.json's error_budget adds up to the frames and agrees with the masks the
    Detector publishes; per_frame.csv carries category, extent and ceiling; table.md,
    the command's summary and error_budget.png show it."""
    import csv

    from satsam_ros.core.metrics import MaskGrid, grid_ceiling, object_extent

    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "--data", str(data), "--size", "512", "--threshold", "0.5", "--json",
                 "--out", str(out), "--no-progress", "--device", "cpu", "--examples", "0"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    budget = result["error_budget"]
    assert sum(budget["counts"].values()) == budget["frames"] == result["frames"] == 4
    assert budget["counts"]["correct"] + budget["counts"]["correct_empty"] == result["correct"]
    assert budget["counts"]["false_alarm"] == result["false_alarms"]
    assert budget["grid"] == MaskGrid(512, 256, 16).to_dict()  # E = 64: 16 cells per patch
    assert "| empty frames | 2 |" in captured.err and "grid ceiling fails" in captured.err
    det = open_detector(str(ckpt), backend="torch", device="cpu", size=512, threshold=0.5)
    rows = list(csv.DictReader((out / "per_frame.csv").open()))
    missed = {"unseen": 0, "dropped": 0}
    for frame, row in zip(load_split(data, "test"), rows):
        res = det.detect(frame.image())
        mask = res.mask
        want = "correct_empty" if frame.is_empty and not mask.any() else None
        if frame.is_empty:
            assert row["category"] == (want or "false_alarm")
            assert row["ceiling_iou"] == "" and row["extent"] == "0"
            assert row["truth_peak"] == "" and row["seen"] == ""
        else:
            peak = float(res.probability[frame.mask() > 0].max())  # the map's highest value on the satellite
            assert float(row["truth_peak"]) == pytest.approx(peak, abs=1e-6)
            assert row["seen"] == str(peak > 0.5)
            if row["category"] == "missed":
                missed["unseen" if peak <= 0.5 else "dropped"] += 1
            assert row["category"] in ("correct", "missed", "extra_objects", "poor_mask")
            assert (row["category"] == "correct") == frame_correct(mask, frame.mask())
            assert (row["category"] == "missed") == (not (mask > 0)[frame.mask() > 0].any())
            assert int(row["extent"]) == object_extent(frame.mask())
            assert float(row["ceiling_iou"]) == pytest.approx(grid_ceiling(frame.mask(), MaskGrid(512, 256, 16)),
                                                              abs=1e-6)
    assert budget["satellite"]["missed_split"] == (dict(missed, unknown=0) if sum(missed.values()) else None)
    assert "## Error budget" in (out / "table.md").read_text()
    assert (out / "error_budget.png").stat().st_size > 1000
