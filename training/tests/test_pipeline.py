"""satsam-train pipeline on a very small generated set: every step runs, the report
compares the sizes with the reference's numbers, and --resume skips finished steps."""

import json

import pytest
from _fitdata import one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.cli import main


def test_pipeline_small(tmp_path, capsys):
    out = tmp_path / "pipe"
    argv = ["pipeline", "--sizes", "512", "--out", str(out), "--synth-train", "4", "--synth-val", "3",
            "--synth-test", "3", "--encoder-size", "64", "--epochs", "1", "--lr", "1e-3", "--keep-empty", "0.5",
            "--no-progress", "--synth-args", "--height", "96", "--width", "128", "--empty-fraction", "0.34"]
    assert main(argv) == 0
    for name in ("data/test.json", "pseudo/train.json", "pseudo/val.json", "S512/patches-train/patches.json",
                 "S512/run/model/satsam.json", "S512/run/model/threshold_curve.png", "S512/eval/metrics.json",
                 "S512/eval/examples.png", "report.md", "report.json"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    s512 = rep["sizes"]["512"]
    metrics = json.loads((out / "S512" / "eval" / "metrics.json").read_text())
    assert s512["accuracy"] == metrics["accuracy"] and s512["frames"] == 3 and s512["empty_frames"] >= 1
    meta = json.loads((out / "S512" / "run" / "model" / "satsam.json").read_text())
    assert meta["size"] == 512 and metrics["threshold"] == meta["threshold"]
    assert "threshold_tuning" in meta["provenance"] and "pipeline" in meta["provenance"]["command"]
    text = (out / "report.md").read_text()
    assert "| Image size | Accuracy (here) | Runtime (s/frame, here) | Accuracy (reference*)" in text
    assert "| 512 x 512 | " in text and "61.9 %" in text and "0.55" in text and "RTX 4080 Super" in text
    assert f"{100 * metrics['accuracy']:.1f} %" in text
    assert [s["step"] for s in rep["steps"]][:3] == ["synth", "pseudo-label", "patches S=512 train"]

    with pytest.raises(SystemExit, match="not empty"):
        main(argv)
    cut = argv.index("--synth-args")  # --synth-args takes the rest of the line
    assert main(argv[:cut] + ["--resume"] + argv[cut:]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["steps"] == []  # everything was already done
    assert again["sizes"]["512"]["accuracy"] == s512["accuracy"]
