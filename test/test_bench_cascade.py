"""The benchmark's coarse-to-fine section (issue 22) and the per-size live-node target."""

import pytest

from satsam_ros.core.meta import SatsamMeta
from satsam_ros.model import BUILTIN_DIR
from satsam_ros.tools.bench import cascade as bench_cascade_mod
from satsam_ros.tools.bench.node import node_target
from satsam_ros.tools.bench.report import to_markdown


@pytest.fixture(scope="module")
def section():
    return bench_cascade_mod.bench_cascade("builtin", [512, 1024], backend="torch", device="cpu", cascade="on",
                                           synthetic_frames=2, warmup=0)


def test_rows_run_interleaved_on_the_same_frames(section):
    rows = {r["row"]: r for r in section["rows"]}
    assert list(rows) == ["512", "1024 full", "1024 cascade"] and section["datasets"] == ["synthetic"]
    assert all(r["frames"] == 2 and r["empty_frames"] == 1 for r in rows.values())
    assert rows["512"]["patches_mean"] == 4 and rows["1024 full"]["patches_mean"] == 16
    cas = rows["1024 cascade"]
    assert cas["cascade_size"] == 512 and cas["cascade"].startswith("512 first")
    assert 4 <= cas["patches_mean"] <= 20 and cas["stopped_share"] is not None
    assert rows["1024 full"]["cascade"] == "off" and rows["1024 full"]["stopped_share"] is None
    for r in rows.values():
        assert 0 < r["median_s"] <= r["p95_s"] and 0 < r["pre_post_share"] < 1
    names = [t["target"] for t in section["targets"]]
    assert any(n.startswith("accuracy, S=1024") for n in names) and any(n.startswith("empty frame") for n in names)
    assert names[-1] == "pre + post share, every S, cascade on and off"
    md = to_markdown(_report(section))
    assert "## Coarse to fine" in md and "1024 cascade" in md


def _report(section):
    machine = {"cpu": "x", "usable_cpus": 2, "logical_cpus": 2, "memory_gib": 1, "cuda": None, "python": "3",
               "torch": "t", "transformers": "t", "opencv": "c", "onnxruntime": None, "platform": "p",
               "load_average": None, "load_average_end": None}
    return {"started": "now", "duration_s": 60, "command": "satsam bench", "machine": machine,
            "threads": {"torch_threads": 1, "interop_threads": 1, "opencv_threads": 1, "omp_wait_policy": None},
            "shipped_model": "builtin", "shipped_model_note": "", "targets": [], "rows": {}, "model_ratios": [],
            "ablation": {}, "roi": [], "skipped": [], "cascade": section, "options": {}, "device": "cpu",
            "backends": ["torch"], "resumed_from": None}


def _row(name, size, acc, fa, median, empty_median, share=0.05):
    return {"dataset": "a", "row": name, "size": size, "accuracy": acc, "false_alarm_rate": fa / 4,
            "false_alarms": fa, "empty_frames": 4, "median_s": median, "empty_median_s": empty_median,
            "pre_post_share": share, "cascade": "512 first, margin 32 px" if "cascade" in name else "off"}


@pytest.mark.parametrize("cascade, verdicts", [
    (_row("2048 cascade", 2048, 0.6, 1, 0.2, 0.11), [True, True, True, True]),
    (_row("2048 cascade", 2048, 0.5, 3, 0.3, 0.15), [False, False, False, False]),  # worse than 512 in every way
])
def test_cascade_targets(cascade, verdicts):
    section = {"datasets": ["a"], "sizes": [512, 2048],
               "rows": [_row("512", 512, 0.55, 2, 0.12, 0.1), _row("2048 full", 2048, 0.5, 3, 1.5, 1.4), cascade]}
    targets = bench_cascade_mod.cascade_targets(section)
    assert [t["passed"] for t in targets[:4]] == verdicts
    assert targets[-1]["target"].startswith("pre + post share") and targets[-1]["passed"] is True
    section["rows"][1]["pre_post_share"] = 0.12
    assert bench_cascade_mod.cascade_targets(section)[-1]["passed"] is False


def test_the_live_node_target_follows_its_size():
    def run(rate, fps, p95):
        return {"rate": rate, "input_fps": rate, "frames_sent": 50, "frames_answered": 50, "output_fps": fps,
                "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95}, "sustained": True}

    runs = [run(5.0, 5.0, 350.0)]
    assert node_target({"runs": runs, "size": 2048})["passed"] is True
    assert node_target({"runs": runs, "size": 2048})["goal"] == [5.0, 400.0]
    assert node_target({"runs": runs})["passed"] is None  # at 512 nothing ran at 10 frames/s
    assert node_target({"runs": [run(5.0, 5.0, 450.0)], "size": 2048})["passed"] is False


def test_bag_eval_and_the_node_bench_pass_the_cascade_as_the_node_parameter():
    from satsam_ros.tools.bag.evaluate import EvalOptions
    from satsam_ros.tools.bag.io import BagError

    for words, value in (("auto", "-1"), ("off", "0"), ("on", "512"), ("1024", "1024")):
        params = EvalOptions(cascade=words, cascade_margin=12).validate().node_parameters()
        assert (params["cascade"], params["cascade_margin"]) == (value, "12")
    assert "cascade" not in EvalOptions().validate().node_parameters()  # the node's own default
    with pytest.raises(BagError, match="cascade must be one of"):
        EvalOptions(cascade="sometimes").validate()


def test_the_patch_cap_reaches_the_cascade_rows_the_baseline_and_the_node(monkeypatch, tmp_path):
    """--cascade-max-patches: the cascade rows' Detectors, the node bench's in-process
    baseline and the live node's parameter (the bag pieces stand in: no node process)."""
    from satsam_ros.tools.bag import evaluate as bag_evaluate
    from satsam_ros.tools.bag import launch, make
    from satsam_ros.tools.bench import node as node_mod
    from satsam_ros.tools.bench.options import Options

    rows = bench_cascade_mod.open_rows("builtin", [512, 2048], "torch", "cpu", "on", 0, 6)
    caps = {r["name"]: r["detector"].cascade_max_patches for r in rows}
    assert caps == {"512": 0, "2048 full": 0, "2048 cascade": 6}
    assert rows[-1]["detector"].describe_cascade() == "512 first, margin 0 px, at most 6 patches"  # as asked
    opts = Options(cascade_max_patches=6, node_rates=["step"], node_frames=2, node_size=2048).validate()
    assert opts.node_options().cascade_max_patches == 6
    with pytest.raises(ValueError, match="cascade max patches must be >= 0"):
        Options(cascade_max_patches=-1).validate()

    sent = []

    def fake_eval(bag, out, **kw):
        sent.append(kw["node_params"])
        return {"latency_ms": {}, "frames_sent": 2, "frames_answered": 2, "frames_dropped": 0}

    monkeypatch.setattr(bag_evaluate, "run_bag_eval", fake_eval)
    monkeypatch.setattr(launch, "find_node_executable", lambda _exe: "detect_node")
    monkeypatch.setattr(make, "make_synthetic_bag", lambda path, **kw: (path.mkdir(parents=True),
                                                                        (path / "metadata.yaml").write_text("")))
    report = node_mod.bench_node(node_mod.NodeBenchOptions(rates=["step"], frames=2, size=2048, model="builtin",
                                                           backend="torch", device="cpu", baseline_frames=1,
                                                           cascade="on", cascade_max_patches=6), tmp_path)
    assert sent == [{"cascade_max_patches": "6"}]
    margin = SatsamMeta.read(BUILTIN_DIR).postprocess["2048"]["cascade_margin"]  # the checkpoint's own margin
    assert report["baseline"]["cascade"] == f"512 first, margin {margin} px, at most 6 patches"
    assert report["options"]["cascade_max_patches"] == 6
