"""`satsam bench`: end to end on the shipped model, plus the pieces it is made of."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from satsam_ros.core import synthetic
from satsam_ros.model import BUILTIN_DIR
from satsam_ros.tools.bench import ablation, detector, options
from satsam_ros.tools.bench import run as bench_run
from satsam_ros.tools.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--models", "shipped", "--sizes", "512", "--backends", "torch", "--frames", "1",
            "--warmup", "0", "--roi-frames", "3", "--node-rates", "10", "step", "--node-frames", "6",
            "--out", str(out), "--no-progress", "--json"]
    assert main(args) == 0
    data = json.loads((out / "bench.json").read_text())
    return data, (out / "bench.md").read_text()


def test_end_to_end_json_has_every_field(report):
    data, _ = report
    assert data["format"] == options.FORMAT and data["shipped_model"] == "builtin"
    assert data["command"].startswith("satsam bench --models shipped --sizes 512")
    for key in ("cpu", "logical_cpus", "memory_gib", "torch", "load_average"):
        assert key in data["machine"]
    assert data["threads"]["torch_threads"] >= 1
    rows = data["rows"]
    assert set(rows) == {"builtin/512/torch/fast", "builtin/512/torch/faithful"}
    fast, faithful = rows["builtin/512/torch/fast"], rows["builtin/512/torch/faithful"]
    for row in (fast, faithful):
        assert row["frames"] == 1 and row["patches"] == 4
        lat = row["latency_s"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p95"] <= lat["max"]
        assert row["patches_per_s"] == pytest.approx(4 / lat["median"])
        assert sum(row["share"].values()) == pytest.approx(1.0, abs=1e-6)
        assert set(row["stages_s"]) == {"pre", "model", "post"}
        assert row["rss_peak_mb"] >= row["rss_before_mb"] > 0 and row["rss_delta_mb"] >= 0
        assert row["gpu_peak_mb"] is None and row["cpu_s"] > 0
    assert faithful["encoder_input"] == 1024 and faithful["batch"] == 1 and not faithful["fused_attention"]
    # SAM's ViT runs the fused relative-position attention on the fast path; SAM 2's Hiera its own
    shipped_is_sam = json.loads((BUILTIN_DIR / "config.json").read_text())["model_type"] == "sam"
    assert fast["encoder_input"] == 256 and fast["fused_attention"] == shipped_is_sam
    assert faithful["speedup_vs_faithful"] == 1.0
    assert fast["speedup_vs_faithful"] == pytest.approx(
        faithful["latency_s"]["median"] / fast["latency_s"]["median"])
    # different encoder inputs: logits not comparable, masks are
    cmp_ = fast["vs_reference"]
    assert fast["reference"] == "builtin/512/torch/faithful" and faithful["vs_reference"] is None
    assert cmp_["max_abs_logit_diff"] is None and cmp_["masks_equal"] == (cmp_["mask_iou"] == 1.0)
    names = [t["target"] for t in data["targets"]]
    assert any("pre + post" in n for n in names) and any("live node" in n for n in names)
    share = next(t for t in data["targets"] if "pre + post" in t["target"])
    assert share["measured"] == pytest.approx(100 * (fast["share"]["pre"] + fast["share"]["post"]))
    vit = next(t for t in data["targets"] if t["target"].startswith("fast vs faithful, ViT-B"))
    assert vit["passed"] is None and "not measured" in vit["detail"]
    (roi,) = data["roi"]
    assert not roi["stand_in"] and roi["frames"] == 3 and roi["patches_per_frame_full"] == 4  # the real model
    assert roi["scans"]["frames"] == 3 and roi["speedup_mean"] > 0


def test_live_node_section_runs_the_installed_node(report):
    data, md = report
    node = data["node"]
    assert node["model"] == data["shipped_model"] and node["node_exe"].endswith("lib/satsam_ros/detect_node")
    assert node["baseline"]["frames"] == 20 and node["baseline"]["p50_ms"] > 0
    assert [r["rate"] for r in node["runs"]] == [10.0, "step"]
    for run in node["runs"]:
        assert run["frames_sent"] == 6 and run["frames_answered"] + run["frames_dropped"] == 6
        lat = run["latency_ms"]
        assert run["frames_answered"] > 0 and 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    paced, step = node["runs"]
    assert paced["input_fps"] == pytest.approx(10.0, rel=0.2)
    assert step["frames_dropped"] == 0  # lock-step waits for every answer
    assert paced["sustained"] == (paced["frames_dropped"] == 0 and paced["output_fps"] >= 0.95 * paced["input_fps"])
    target = next(t for t in data["targets"] if t["target"].startswith("live node"))
    assert target["measured"] == pytest.approx(step["output_fps"])
    assert target["passed"] == (paced["sustained"] and paced["latency_ms"]["p95"] <= 200.0)
    assert "## Live node over loopback DDS" in md and "| 10hz |" in md and "| step |" in md


def test_markdown_says_what_was_measured_and_what_not(report):
    _, md = report
    for words in ("## Machine", "## Targets", "## Latency per frame", "## ROI tracking", "## Live node",
                  "| builtin | 512 | torch | fast |", "not measured"):
        assert words in md


def test_resume_takes_over_measured_groups(report, tmp_path):
    data, _ = report
    previous = tmp_path / "old.json"
    previous.write_text(json.dumps(data))
    out = tmp_path / "again"
    args = ["bench", "--models", "shipped", "--sizes", "512", "--backends", "torch", "--frames", "1",
            "--warmup", "0", "--roi-frames", "3", "--out", str(out), "--no-progress", "--resume", str(previous)]
    assert main(args) == 0
    again = json.loads((out / "bench.json").read_text())
    assert again["rows"] == data["rows"] and again["roi"] == data["roi"] and again["node"] == data["node"]
    assert again["groups"]["builtin/512"]["resumed"] is True
    assert again["resumed_from"]["started"] == data["started"]
    assert not (out / "bench.partial.json").exists()
    assert "taken over from the earlier run" in (out / "bench.md").read_text()


def test_node_mode_alone_writes_its_report(tmp_path, capsys):
    assert main(["bench", "--node", "--models", "tiny", "--node-rates", "10", "--node-frames", "4",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    node = json.loads((tmp_path / "node-bench.json").read_text())
    assert node["model"] == "tiny" and [r["rate"] for r in node["runs"]] == [10.0]
    assert node["runs"][0]["frames_sent"] == 4
    assert node["command"] == "satsam bench --node --node-rates 10 --node-frames 4 --node-size 512 --models tiny"
    assert "10hz" in printed and "live node >= 10 fps" in printed
    assert "## Live node" in (tmp_path / "node-bench.md").read_text()
    assert not (tmp_path / "bench.json").exists()  # only the node section ran


def test_node_mode_alone_passes_the_cascade_patch_cap_to_the_node(tmp_path, monkeypatch):
    from satsam_ros.tools.bench import node as node_mod

    class Seen(Exception):
        pass

    def fake(opts, work, **kw):
        raise Seen(opts)

    monkeypatch.setattr(node_mod, "bench_node", fake)
    with pytest.raises(Seen) as seen:
        main(["bench", "--node", "--models", "tiny", "--node-rates", "step", "--node-size", "2048",
              "--cascade-max-patches", "8", "--out", str(tmp_path), "--no-progress"])
    opts = seen.value.args[0]
    assert (opts.size, opts.cascade_max_patches, opts.model) == (2048, 8, "tiny")


def test_node_reference_runs_lock_step_on_the_same_bag_and_reports_the_capacity_ratio(tmp_path, capsys):
    # issue 21: the shipped model's lock-step capacity against today's, in the same run
    assert main(["bench", "--node", "--models", "tiny", "--node-reference", "tiny-sam2", "--node-rates", "step",
                 "--node-frames", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    node = json.loads((tmp_path / "node-bench.json").read_text())
    ref = node["reference"]
    assert ref["model"] == "tiny-sam2" and [r["rate"] for r in ref["runs"]] == ["step"]
    assert ref["runs"][0]["frames_sent"] == 4 and ref["runs"][0]["frames_answered"] == 4
    mine, theirs = node["runs"][0]["output_fps"], ref["runs"][0]["output_fps"]
    c = node["capacity_target"]
    assert c["measured"] == pytest.approx(mine / theirs) and c["passed"] == (mine / theirs >= 1.5)
    assert node["command"].endswith("--node-reference tiny-sam2")
    assert "lock-step capacity >= 1.5x tiny-sam2's" in printed
    assert "Reference `tiny-sam2`" in (tmp_path / "node-bench.md").read_text()
    with pytest.raises(SystemExit, match="add 'step' to the node rates"):
        main(["bench", "--node", "--models", "tiny", "--node-reference", "builtin", "--node-rates", "10",
              "--out", str(tmp_path / "refused"), "--no-progress"])


def test_node_rates_are_checked():
    from satsam_ros.tools.bench.node import parse_rates

    assert parse_rates(["10", 2.5, "STEP"]) == [10.0, 2.5, "step"]
    for bad in ("0", "-3", "fast", "nan"):
        with pytest.raises(ValueError, match=f"got {bad!r}"):
            parse_rates([bad])
    with pytest.raises(SystemExit, match="node rate must be a positive number"):
        main(["bench", "--node", "--node-rates", "max", "--no-progress"])


def _run(rate, sent, answered, out_fps, p95):
    inp = None if rate == "step" else float(rate)
    return {"rate": rate, "input_fps": inp, "frames_sent": sent, "frames_answered": answered,
            "frames_dropped": sent - answered, "output_fps": out_fps,
            "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95}, "sustained":
            rate != "step" and answered == sent and out_fps >= 0.95 * inp}


@pytest.mark.parametrize("runs, passed", [
    ([_run(10.0, 100, 100, 10.0, 150.0), _run("step", 100, 100, 14.0, 70.0)], True),
    ([_run(10.0, 100, 97, 9.7, 150.0), _run("step", 100, 100, 9.0, 70.0)], False),   # drops at 10/s
    ([_run(10.0, 100, 100, 10.0, 250.0)], False),                                    # p95 too high
    ([_run(5.0, 100, 100, 5.0, 50.0), _run(20.0, 100, 60, 12.0, 90.0)], False),      # 20/s not kept up
    ([_run(5.0, 100, 100, 5.0, 50.0)], None),                                        # nothing at >= 10/s
])
def test_node_target_verdicts(runs, passed):
    from satsam_ros.tools.bench.node import node_target

    target = node_target({"runs": runs})
    assert target["passed"] is passed


def fake_sam(hidden, image_size):
    return SimpleNamespace(config=SimpleNamespace(model_type="sam", vision_config=SimpleNamespace(
        hidden_size=hidden, image_size=image_size)))


def test_slow_rows_are_skipped_with_a_reason_unless_asked():
    opts = options.Options(ablation=True)
    sam = fake_sam(768, 1024)
    rows, skipped = detector.plan_variants("vit-b", sam, 512, ["torch"], opts, "cpu")
    names = [r.name for r in rows]
    assert names == ["fast", "faithful", "native E=256", "fast, 1 patch/forward", "fast, 16 patches/forward",
                     "fast bf16"]
    # batched stock attention at E = 1024 would need GBs of bias: skipped, with the reason
    (stock,) = skipped
    assert stock["row"] == "fast, stock attention" and "805 MB" in stock["reason"]
    rows, skipped = detector.plan_variants("vit-b", sam, 2048, ["torch"], opts, "cpu")
    assert [r.name for r in rows] == ["native E=256"]
    assert {s["row"] for s in skipped} == {"torch fast", "torch faithful", "fast ablation rows"}
    assert all("--include-slow" in s["reason"] and "64 encoder passes" in s["reason"] for s in skipped)
    opts.include_slow = True
    rows, skipped = detector.plan_variants("vit-b", sam, 2048, ["torch"], opts, "cpu")
    assert len(rows) == 6 and len(skipped) == 1
    rows, _ = detector.plan_variants("tiny", fake_sam(96, 256), 512, ["torch"], opts, "cpu")
    assert "fast, stock attention" in [r.name for r in rows]
    # a small model never counts as slow; its native E equals the patch: no extra row
    rows, skipped = detector.plan_variants("tiny", fake_sam(96, 256), 2048, ["torch"], options.Options(), "cpu")
    assert [r.name for r in rows] == ["fast", "faithful"] and not skipped


def fake_row(model, size, name, median, patches, **extra):
    row = {"model": model, "size": size, "name": name, "latency_s": {"median": median}, "patches": patches,
           "precision": "fp32", "share": {"pre": 0.02, "model": 0.95, "post": 0.03}, "vs_reference": None}
    row.update(extra)
    return row


def fake_report(fast_median, logit_diff, big_median=1.0):
    rows = [
        fake_row("vit-b", 512, "faithful", 40.0, 4),
        fake_row("vit-b", 512, "fast", fast_median, 4,
                 vs_reference={"max_abs_logit_diff": logit_diff, "logit_scale": 1.0, "mask_iou": 1.0}),
        fake_row("vit-b", 512, "native E=256", 2.0, 4),
        fake_row("tiny", 512, "fast", 0.1, 4),
        fake_row("tiny", 2048, "fast", big_median, 64),
    ]
    return {"rows": {f"{r['model']}/{r['size']}/torch/{r['name']}": r for r in rows},
            "shipped_model": "tiny", "options": {"native_encoder": 256}}


@pytest.mark.parametrize(
    "fast_median, diff, passed",
    [(16.0, 1e-6, True), (25.0, 1e-6, False), (16.0, 0.5, False)],
)
def test_target_verdicts(fast_median, diff, passed):
    targets = {t["target"]: t for t in bench_run.evaluate_targets(fake_report(fast_median, diff))}
    same = targets["fast vs faithful, ViT-B, S=512, same model"]
    assert same["measured"] == pytest.approx(40.0 / fast_median) and same["passed"] is passed
    native = targets["native E=256 encoder vs faithful, ViT-B, S=512"]
    assert native["measured"] == pytest.approx(20.0) and native["passed"] is True
    share = next(t for t in targets.values() if t["target"].startswith("pre + post"))
    assert share["measured"] == pytest.approx(5.0) and share["passed"] is True
    growth = targets["cost growth 512 -> 2048, tiny fast"]
    assert growth["measured"] == pytest.approx(10.0) and growth["passed"] is True


def test_cost_growth_beyond_the_patch_count_is_a_miss():
    targets = {t["target"]: t for t in bench_run.evaluate_targets(fake_report(16.0, 0.0, big_median=2.0))}
    assert targets["cost growth 512 -> 2048, tiny fast"]["passed"] is False


def test_summary_statistics():
    timings = [{"pre": 0.1, "model": m, "post": 0.1, "total": 0.2 + m, "cpu": 1.0} for m in (1.0, 2.0, 3.0, 10.0)]
    s = detector.summarise(timings, patches=4)
    assert s["latency_s"]["median"] == pytest.approx(2.7)
    assert s["latency_s"]["p95"] == pytest.approx(np.percentile([1.2, 2.2, 3.2, 10.2], 95))
    assert s["share"]["model"] == pytest.approx(16.0 / 16.8)
    assert s["patches_per_s"] == pytest.approx(4 / 2.7) and s["cpu_s"] == 1.0


def test_moving_sequence_moves():
    seq = synthetic.moving_sequence(5, seed=1, speed=8.0)
    centres = []
    for frame, truth in seq:
        assert frame.shape == truth.shape == (512, 641) and frame.dtype == np.uint8
        ys, xs = np.nonzero(truth)
        assert len(xs) > 100
        assert frame[truth > 0].mean() > frame[truth == 0].mean() + 40
        centres.append((xs.mean(), ys.mean()))
    steps = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(centres, centres[1:])]
    assert all(4.0 < s < 12.0 for s in steps)
    with pytest.raises(ValueError, match="count must be >= 1"):
        synthetic.moving_sequence(0)


def test_reference_prepost_gives_the_detectors_mask_and_both_are_timed():
    frames = detector.bench_frames(1)
    rows = ablation.bench_prepost([512], frames, rounds=2)
    (row,) = rows
    assert row["size"] == 512 and row["frames"] == 2
    for key in ("reference_pre_ms", "reference_post_ms", "detector_pre_ms", "detector_post_ms", "speedup"):
        assert row[key] > 0
    mask, pre, post = ablation.reference_prepost(frames[0], 512, threshold=0.4)  # zero logits: p = 0.5 > 0.4
    assert mask.shape == frames[0].shape and (mask == 255).all() and pre > 0 and post > 0


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="size must be one of"):
        options.Options(sizes=[300]).validate()
    with pytest.raises(ValueError, match="budget must be > 0"):
        options.Options(budget=0).validate()
    with pytest.raises(SystemExit, match="satsam bench: frames must be >= 1"):
        main(["bench", "--models", "tiny", "--frames", "0", "--no-progress"])


def test_pre_post_share_is_judged_on_every_backend():
    """The node runs what `auto` picks (ONNX Runtime on a CPU): a faster model there makes
    pre + post a larger share, and the worst backend decides the verdict."""
    report = fake_report(16.0, 0.0)
    ort = fake_row("tiny", 512, "fast", 0.05, 4, share={"pre": 0.05, "model": 0.8, "post": 0.15})
    report["rows"]["tiny/512/onnxruntime/fast"] = ort
    report["backends"] = ["torch", "onnxruntime"]
    share = next(t for t in bench_run.evaluate_targets(report) if t["target"].startswith("pre + post"))
    assert share["measured"] == pytest.approx(20.0) and share["passed"] is False
    assert "torch: 5.0 %" in share["detail"] and "onnxruntime: 20.0 %" in share["detail"]


def test_row_comparison_with_the_reference():
    """The agreement figures of a row against the reference row, on known outputs."""
    prob = np.linspace(0.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    ref = {"prob": prob, "mask": np.where(prob > 0.65, 255, 0).astype(np.uint8), "logits": np.zeros((2, 4, 4))}
    shifted = prob.copy()
    shifted[:5] = 0.0  # the top half loses everything
    got = {"prob": shifted, "mask": np.where(shifted > 0.65, 255, 0).astype(np.uint8),
           "logits": np.full((2, 4, 4), 0.25)}
    same = detector._compare(ref, ref)
    assert same["masks_equal"] and same["mask_iou"] == 1.0 and same["max_abs_prob_diff"] == 0.0
    assert same["max_abs_logit_diff"] == 0.0 and same["mask_iou_at_median"] == 1.0
    cmp_ = detector._compare(ref, got)
    assert cmp_["reference_mask_fraction"] == pytest.approx(0.35)  # 35 of 100 values over 0.65
    assert cmp_["mask_iou"] == 1.0  # every masked pixel (> 0.65) is in the bottom half, which did not move
    median = float(np.median(prob))  # half the pixels on: 50 of them, all in the bottom half
    assert cmp_["mask_iou_at_median"] == pytest.approx(np.count_nonzero(shifted > median) / 50)
    assert cmp_["max_abs_prob_diff"] == pytest.approx(float(prob[:5].max()))
    assert cmp_["max_abs_logit_diff"] == pytest.approx(0.25) and cmp_["logit_scale"] == 0.0
    other = dict(got, logits=np.zeros((2, 8, 8)))  # other encoder input: logits not comparable
    assert detector._compare(ref, other)["max_abs_logit_diff"] is None


# --------------------------------------------------------------------------- SAM 2


def fake_sam2(last_width, image_size):
    backbone = SimpleNamespace(embed_dim_per_stage=[last_width // 8, last_width // 4, last_width // 2, last_width])
    return SimpleNamespace(config=SimpleNamespace(
        model_type="sam2", vision_config=SimpleNamespace(backbone_config=backbone),
        prompt_encoder_config=SimpleNamespace(image_size=image_size)))


def test_sam2_rows_run_their_own_attention_and_hiera_tiny_counts_as_slow():
    opts = options.Options(ablation=True)
    rows, skipped = detector.plan_variants("sam2-hiera-tiny", fake_sam2(768, 1024), 512, ["torch"], opts, "cpu")
    assert [r.name for r in rows] == ["fast", "faithful", "native E=256", "fast, 1 patch/forward",
                                      "fast, 16 patches/forward", "fast bf16"]
    assert not any(r.fused_attention for r in rows)
    assert "SAM 2's own attention" in rows[0].step
    (stock,) = skipped
    assert stock["row"] == "fast, stock attention" and "no fused variant" in stock["reason"]
    rows, skipped = detector.plan_variants("sam2-hiera-tiny", fake_sam2(768, 1024), 2048, ["torch"],
                                           options.Options(), "cpu")
    assert [r.name for r in rows] == ["native E=256"]
    assert all("--include-slow" in s["reason"] and "hiera-tiny" in s["reason"] for s in skipped)
    rows, skipped = detector.plan_variants("tiny-sam2", fake_sam2(256, 256), 2048, ["torch"], options.Options(),
                                           "cpu")
    assert [r.name for r in rows] == ["fast", "faithful"] and not skipped  # small: never slow


def test_model_ratios_pair_rows_with_the_reference_model():
    rows = [fake_row("vit-b", 512, "fast", 30.0, 4, backend="torch"),
            fake_row("vit-b", 512, "faithful", 40.0, 4, backend="torch"),
            fake_row("sam2-hiera-tiny", 512, "fast", 10.0, 4, backend="torch"),
            fake_row("sam2-hiera-tiny", 512, "faithful", 8.0, 4, backend="torch"),
            fake_row("sam2-hiera-tiny", 1024, "fast", 9.0, 16, backend="torch")]  # no ViT-B partner
    report = {"rows": {f"{r['model']}/{r['size']}/torch/{r['name']}": r for r in rows}}
    ratios = bench_run.model_ratios(report, "vit-b")
    assert [(r["model"], r["size"], r["row"], r["speedup"]) for r in ratios] == [
        ("sam2-hiera-tiny", 512, "fast", 3.0), ("sam2-hiera-tiny", 512, "faithful", 5.0)]
    assert report["rows"]["sam2-hiera-tiny/512/torch/fast"]["speedup_vs_vit-b"] == 3.0
    assert bench_run.model_ratios(report, None) == []


def test_bench_runs_a_sam2_model_beside_a_reference(tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "--models", "tiny-sam2", "tiny", "--reference-model", "tiny", "--sizes", "512",
                 "--backends", "torch", "--frames", "1", "--warmup", "0", "--no-roi", "--no-node", "--out",
                 str(out), "--no-progress", "--json"]) == 0
    data = json.loads((out / "bench.json").read_text())
    fast, faithful = data["rows"]["tiny-sam2/512/torch/fast"], data["rows"]["tiny-sam2/512/torch/faithful"]
    assert (fast["encoder_input"], faithful["encoder_input"], faithful["batch"]) == (256, 1024, 1)
    assert not fast["fused_attention"] and "fused" not in fast["backend_description"]
    assert data["rows"]["tiny/512/torch/fast"]["fused_attention"]
    ratios = {(r["model"], r["row"]): r for r in data["model_ratios"]}
    assert set(ratios) == {("tiny-sam2", "fast"), ("tiny-sam2", "faithful")}
    assert ratios["tiny-sam2", "fast"]["speedup"] == pytest.approx(
        data["rows"]["tiny/512/torch/fast"]["latency_s"]["median"] / fast["latency_s"]["median"])
    md = (out / "bench.md").read_text()
    assert "## Against tiny" in md and "| tiny-sam2 | 512 | torch | fast | 256 |" in md
    assert "--reference-model tiny" in data["command"]
