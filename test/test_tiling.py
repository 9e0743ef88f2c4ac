"""Resize, patch grid, stitching and overlap blending."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satsam_ros.core.tiling import PatchGrid, check_size, resize


@pytest.mark.parametrize("size, count", [(512, 4), (1024, 16), (2048, 64)])
def test_patch_counts_at_reference_sizes(size, count):
    grid = PatchGrid(size, 256)
    assert len(grid) == count
    assert len(set(grid.origins)) == count


@pytest.mark.parametrize("size", [512, 1024])
def test_exact_round_trip_without_overlap(size):
    img = np.random.default_rng(0).random((size, size)).astype(np.float32)
    grid = PatchGrid(size, 256)
    patches = grid.extract(img)
    assert patches.shape == (len(grid), 256, 256)
    np.testing.assert_array_equal(grid.stitch(patches), img)
    # patch k is the block at origin k
    y, x = grid.origins[3]
    np.testing.assert_array_equal(patches[3], img[y:y + 256, x:x + 256])


def test_extract_keeps_channels():
    img = np.random.default_rng(0).random((512, 512, 3)).astype(np.float32)
    patches = PatchGrid(512, 256).extract(img)
    assert patches.shape == (4, 256, 256, 3)
    np.testing.assert_array_equal(patches[1], img[:256, 256:])


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(32, 200),
    patch_frac=st.floats(0.2, 1.0),
    overlap_frac=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property_any_grid(size, patch_frac, overlap_frac, seed):
    patch = max(8, int(size * patch_frac))
    overlap = min(patch - 1, int(patch * overlap_frac))
    grid = PatchGrid(size, patch, overlap)
    img = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    covered = np.zeros((size, size), bool)
    for y, x in grid.origins:
        assert 0 <= y <= size - patch and 0 <= x <= size - patch
        covered[y:y + patch, x:x + patch] = True
    assert covered.all()
    # consistent patches (cut from one image) stitch back to that image, blended or not
    np.testing.assert_allclose(grid.stitch(grid.extract(img)), img, rtol=1e-5, atol=1e-6)


def test_overlap_blending_removes_the_seam():
    """Two neighbours disagree by a constant offset: without overlap the stitched image
    jumps at the border; with overlap the step is spread over the overlap band."""
    size, patch = 512, 256
    hard = PatchGrid(size, patch, 0)
    soft = PatchGrid(size, patch, 64)
    for grid in (hard, soft):
        offsets = np.array([1.0 if x >= size // 2 else 0.0 for _, x in grid.origins], np.float32)
        patches = np.ones((len(grid), patch, patch), np.float32) * offsets[:, None, None]
        out = grid.stitch(patches)
        row = out[100]
        jumps = np.abs(np.diff(row))
        if grid is hard:
            assert jumps.max() == pytest.approx(1.0)
        else:
            assert jumps.max() < 0.05  # spread over the band
            assert row[0] == pytest.approx(0.0) and row[-1] == pytest.approx(1.0)


def test_blend_weights_positive_and_flat_inside():
    grid = PatchGrid(512, 256, 32)
    w = grid._weights
    assert (w > 0).all()
    # the top-left patch has full weight on the image border sides
    assert w[0][0, 0] == 1.0 and w[0][128, 128] == 1.0


def test_invalid_grids_and_sizes():
    with pytest.raises(ValueError, match="overlap"):
        PatchGrid(512, 256, 256)
    with pytest.raises(ValueError, match="larger than the image"):
        PatchGrid(128, 256)
    with pytest.raises(ValueError, match="512, 1024, 2048; got 300"):
        check_size(300)
    with pytest.raises(ValueError, match="grid expects"):
        PatchGrid(512).extract(np.zeros((256, 256), np.float32))
    with pytest.raises(ValueError, match="patches"):
        PatchGrid(512).stitch(np.zeros((3, 256, 256), np.float32))


def test_resize_shapes_and_identity():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert resize(img, 3, 4) is img
    assert resize(img, 6, 8).shape == (6, 8)
    assert resize(np.zeros((10, 10, 1), np.float32), 4, 4).shape == (4, 4, 1)
    lab = np.array([[0, 255], [255, 0]], np.uint8)
    assert set(np.unique(resize(lab, 7, 7, nearest=True))) == {0, 255}
