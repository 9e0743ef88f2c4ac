"""The shipped model (``builtin``) still meets its floor on frames it has never seen.

Fresh synthetic test sets of 60 frames from each generator (style a at seed 31337 with
procedural backgrounds only, style b at seed 31338: no recipe of this project uses them),
scored by ``satsam-train evaluate builtin`` at S = 512. The committed model (model v3
continued with the Dice term on satellite patches only, scripts/train_v3.sh with FROM)
measures 38.3 % accuracy / 0.304 mean IoU on style a and 43.3 % / 0.329 on style b here,
and on style r (seed 31339: real Earth backgrounds from the held-out band of longitudes)
5 of 51 satellite frames (9.8 %) / 0.105 mean IoU (its card,
satsam_ros/models/builtin/MODEL.md, has the 100-frame test sets at three sizes). The
floors sit a few points below (each frame is 1.7 points, a satellite frame of r 2 points)
with room for BLAS and platform noise, and above what a broken pipeline gives: a model
that predicts nothing scores the empty-frame share (15 %) and mean IoU 0 (0 % of the
satellite frames), the model before this one 33.3 / 36.7 % and 4 of 51 (mean IoU 0.241 /
0.245 / 0.101). A change to the Detector, the pre-processing, the post-processing
priors or the checkpoint loading that hurts the shipped model fails here.
"""

import json

import pytest
from satsam_training.cli import main

from satsam_ros.model import BUILTIN_DIR

# (accuracy, mean IoU) floors per generator, below the measured values in the docstring
# (style r: accuracy on the satellite frames, since this model's false alarms on 8 of the 9
# empty frames leave its overall accuracy under what a model predicting nothing scores)
FLOORS = {"a": {"accuracy": 0.33, "mean_iou": 0.26}, "b": {"accuracy": 0.38, "mean_iou": 0.28},
          "r": {"accuracy_nonempty": 0.07, "mean_iou": 0.085}}
SEEDS = {"a": "31337", "b": "31338", "r": "31339"}


@pytest.fixture(scope="module", params=["a", "b", "r"])
def fresh(request, tmp_path_factory):
    """60 fresh test frames of generator style a (seed 31337), style b (seed 31338) or style r
    (seed 31339: real Earth backgrounds from the held-out band of longitudes)."""
    style = request.param
    out = tmp_path_factory.mktemp(f"fresh-{style}")
    # style a as the card measured it: procedural backgrounds only (--real-share 0 gives
    # exactly the frames of the generator before real Earth backgrounds joined it)
    real = ["--real-share", "0"] if style == "a" else []
    assert main(["synth", "--style", style, "--out", str(out), "--n-train", "0", "--n-val", "0", "--n-test", "60",
                 "--seed", SEEDS[style]] + real) == 0
    return style, out


def test_shipped_model_card_matches_its_checkpoint():
    meta = json.loads((BUILTIN_DIR / "satsam.json").read_text())
    config = json.loads((BUILTIN_DIR / "config.json").read_text())
    card = (BUILTIN_DIR / "MODEL.md").read_text()
    prov = meta["provenance"]
    assert config["model_type"] == "sam2"  # search v3's winner, a small SAM 2 without the presence BCE
    assert meta["encoder_input_size"] == 256 and meta["patch_size"] == 256
    # the previous builtin (the two legs of scripts/train_v3.sh) continued 6,000 steps with the
    # Dice term on satellite patches only (scripts/train_v3.sh with FROM=builtin LOSS=dicece-pos)
    assert prov["seed"] == 8 and "satsam-train fit" in prov["command"] and "--out runs/v3/pos" in prov["command"]
    assert prov["base"] == "satsam_ros/models/builtin" and prov["presence_weight"] == 0.0
    assert prov["settings"]["loss"] == "dicece-pos" and "--loss dicece-pos" in prov["command"]
    assert sorted(set(prov["data"]["patches_size"])) == [512, 1024, 2048]  # one model for the three sizes
    assert sorted(meta["postprocess"]) == ["1024", "2048", "512"]  # tuned at every size
    for size, post in meta["postprocess"].items():
        assert prov["threshold_tuning"][size]["chosen"]["min_area"] == post["min_area"]
        assert f"| {size} | {post['threshold']:g} | {post['min_area']} |" in card, size
    for size in ("1024", "2048"):  # the coarse-to-fine cascade, tuned per size
        post = meta["postprocess"][size]
        assert f"| {size} | 512 first, margin {post['cascade_margin']} px |" in card, size
    assert "scripts/train_v3.sh" in card
    assert (BUILTIN_DIR / "model.safetensors").stat().st_size < 10 * 2**20  # small enough to commit


def test_shipped_model_provenance_names_paths_relative_to_the_repository():
    """No absolute path of the training machine: data paths read the same on every clone."""
    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    prov = json.loads((BUILTIN_DIR / "satsam.json").read_text())["provenance"]
    absolute = [s for s in strings(prov) if s.startswith(("/", "~")) or " /" in s]
    assert not absolute, absolute
    # the random patches of the three sizes (the base it continues was trained on the mined ones too)
    assert prov["data"]["patches"] == ["runs/v3/p512", "runs/v3/p1024", "runs/v3/p2048"]


def test_shipped_model_meets_its_floor_on_a_fresh_set(fresh, tmp_path, capsys):
    style, data = fresh
    assert main(["evaluate", "builtin", "--data", str(data), "--size", "512", "--json", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 60 and result["model"] == "builtin"
    for metric, floor in FLOORS[style].items():
        assert result[metric] >= floor, (metric, result)
