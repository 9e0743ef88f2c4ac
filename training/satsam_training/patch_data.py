"""The training data: patches as model inputs and loss targets, in a reproducible order
(one pass per epoch, :class:`EpochPermutation`, or epochs of a fixed number of steps
from an endless stream, :class:`StreamPermutation`).

A patch goes through exactly the Detector's pre-processing
(:func:`satsam_ros.core.preprocess.patch_pixels`); its target is the P x P mask (or its
area-downsampled E/4 version). Augmentation and order are functions of (seed, epoch,
index), so a resumed run sees what an uninterrupted one would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from .fit_config import FitError, dir_list


def read_patch_index(directory) -> Dict[str, Any]:
    """``DIR/patches.json`` read and checked by ``satsam_training.patches``; FitError if unusable."""
    from .patches import read_patch_index as _read

    if not (Path(directory) / "patches.json").is_file():
        raise FitError(f"{directory}: no patches.json (make one with `satsam-train patches`)")
    try:
        index = _read(directory)
    except ValueError as exc:
        raise FitError(str(exc)) from exc
    if not index["items"]:
        raise FitError(f"{directory}/patches.json: no patches listed")
    return index


class PatchDataset:
    """The patches of one or more ``patches.json`` directories as model inputs and loss
    targets (several directories, e.g. one per S, are concatenated in the given order;
    their patch sizes must agree, ``size`` is None when their S differ).

    ``dataset[i]`` -> ``(pixels 3 x E x E float32, target 1 x T x T float32 in [0, 1])``
    with T = P (``loss_resolution="patch"``) or E / 4 (``"low"``, area-averaged, so a
    target pixel holds the satellite's coverage fraction). Images and masks are read
    once and kept in memory (P x P uint8 each). Augmentation, when on, draws from a
    generator seeded by (seed, epoch, index), so it is the same in every run and on
    every process; set :attr:`epoch` before each epoch.
    """

    def __init__(
        self,
        directory,
        encoder_size: int,
        loss_resolution: str = "patch",
        augment: bool = False,
        seed: int = 0,
    ):
        from .patches import load_patch

        self.directories = [Path(d) for d in dir_list(directory)]
        if not self.directories:
            raise FitError("fit: no patches directory given")
        self.indexes = [read_patch_index(d) for d in self.directories]
        self.index = self.indexes[0]
        sizes = {int(ix["patch_size"]) for ix in self.indexes}
        if len(sizes) > 1:
            raise FitError(f"fit: the patches directories mix patch sizes {sorted(sizes)}")
        self.patch_size = sizes.pop()
        frame_sizes = {ix.get("size") for ix in self.indexes}
        self.size = frame_sizes.pop() if len(frame_sizes) == 1 else None
        self.sizes = [ix.get("size") for ix in self.indexes]
        self.encoder_size = int(encoder_size)
        self.loss_resolution = loss_resolution
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.images: List[np.ndarray] = []
        self.masks: List[np.ndarray] = []
        p = self.patch_size
        for directory, index in zip(self.directories, self.indexes):
            for item in index["items"]:
                try:
                    img, mask = load_patch(directory, item, p)
                except (OSError, ValueError) as exc:
                    raise FitError(f"fit: {exc}") from exc
                self.images.append(img)
                self.masks.append(mask)
        self.positive = np.array([bool(np.any(m)) for m in self.masks])

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _augmented(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        img, mask = self.images[index], self.masks[index]
        if not self.augment:
            return img, mask
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        gain = float(rng.uniform(0.8, 1.2))
        offset = float(rng.uniform(-20.0, 20.0))
        img = np.rot90(img, k)
        mask = np.rot90(mask, k)
        if flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        img = np.clip(img.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)

    def pixels(self, img: np.ndarray) -> np.ndarray:
        """P x P uint8 patch -> 3 x E x E float32: the Detector's pre-processing of that
        patch (:func:`satsam_ros.core.preprocess.patch_pixels`)."""
        from satsam_ros.core.preprocess import patch_pixels

        return patch_pixels(img, self.encoder_size)

    def target(self, mask: np.ndarray) -> np.ndarray:
        """P x P 0/255 mask -> 1 x T x T float32 in [0, 1]."""
        import cv2

        t = (mask > 0).astype(np.float32)
        if self.loss_resolution == "low":
            m = self.encoder_size // 4
            t = cv2.resize(t, (m, m), interpolation=cv2.INTER_AREA)
        return t[None]

    def __getitem__(self, index: int):
        import torch

        img, mask = self._augmented(int(index))
        return torch.from_numpy(self.pixels(img)), torch.from_numpy(self.target(mask))


class EpochPermutation:
    """A sampler whose order is a permutation drawn from (seed, epoch): reproducible
    across runs, resumes and process counts (accelerate shards it per process)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        import torch

        if not self.shuffle:
            return iter(range(self.length))
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())


class StreamPermutation:
    """A sampler for epochs of a fixed number of samples, drawn from an endless stream:
    the concatenation of permutations of the dataset, one per pass, each drawn from
    (seed, pass). Epoch ``e`` is samples ``[e * n, (e + 1) * n)`` of the stream, so an
    epoch can be shorter or longer than the dataset, and the order is reproducible
    across runs and resumes."""

    def __init__(self, length: int, seed: int, samples_per_epoch: int):
        self.length = int(length)
        self.seed = int(seed)
        self.samples = int(samples_per_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def _pass(self, k: int) -> List[int]:
        import torch

        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + 7_919 * k + 1)
        return torch.randperm(self.length, generator=gen).tolist()

    def __iter__(self):
        start = self.epoch * self.samples
        k, offset = divmod(start, self.length)
        out: List[int] = []
        while len(out) < self.samples:
            out.extend(self._pass(k)[offset:])
            k, offset = k + 1, 0
        return iter(out[: self.samples])
