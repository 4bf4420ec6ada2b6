import numpy as np
import pytest

from vxm_tf import metrics, surfaces


def test_dice_identical_disjoint_and_absent():
    seg = np.zeros((10, 10), int)
    seg[2:5, 2:5] = 1
    seg[6:9, 6:9] = 2
    assert metrics.dice(seg, seg) == {1: 1.0, 2: 1.0}
    other = np.zeros_like(seg)
    other[6:9, 6:9] = 1
    other[2:5, 2:5] = 2
    assert metrics.dice(seg, other) == {1: 0.0, 2: 0.0}
    assert np.isnan(metrics.dice(seg, seg, labels=[7])[7])
    half = seg.copy()
    half[2:5, 2:4] = 0  # label 1 keeps 3 of its 9 voxels
    assert metrics.dice(seg, half)[1] == pytest.approx(2 * 3 / (9 + 3))
    assert metrics.mean_dice(seg, half) == pytest.approx((0.5 + 1.0) / 2)


def plate(shape, thickness, shift=0):
    """A plate thin along axis 0 (so its faces normal to axis 0 hold most surface)."""
    seg = np.zeros(shape, int)
    lateral = tuple(slice(4, n - 4) for n in shape[1:])
    seg[(slice(10 + shift, 10 + shift + thickness),) + lateral] = 3
    return seg


@pytest.mark.parametrize("shape, spacing", [((40, 50), (1.0, 1.0)), ((40, 50), (2.0, 0.5)),
                                            ((32, 30, 28), (1.0, 1.0, 1.0)),
                                            ((32, 30, 28), (1.5, 1.0, 2.0))])
@pytest.mark.parametrize("k", [1, 3])
def test_hausdorff_of_a_shifted_plate_is_the_shift_in_mm(shape, spacing, k):
    a, b = plate(shape, 4), plate(shape, 4, shift=k)
    assert metrics.hausdorff(a, b, spacing_mm=spacing)[3] == pytest.approx(k * spacing[0])
    assert metrics.hausdorff(a, b, spacing_mm=spacing, percent=95)[3] == pytest.approx(
        k * spacing[0])


def test_hausdorff_of_a_shifted_sphere():
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"))
    sphere = (np.sum((grid - 20) ** 2, axis=0) <= 10**2).astype(int)
    shifted = np.roll(sphere, 3, axis=1)
    hd = metrics.hausdorff(sphere, shifted, spacing_mm=(1, 2, 1))[1]
    assert hd == pytest.approx(6.0)
    hd95 = metrics.hausdorff(sphere, shifted, spacing_mm=(1, 2, 1), percent=95)[1]
    assert 0 < hd95 < hd  # most of the surface is closer than the extreme points
    assert metrics.hausdorff(sphere, sphere)[1] == 0.0


def test_hausdorff_of_empty_labels():
    seg = plate((30, 30), 3)
    empty = np.zeros_like(seg)
    assert metrics.hausdorff(seg, empty)[3] == np.inf
    assert np.isnan(metrics.hausdorff(empty, empty, labels=[3])[3])
    with pytest.raises(ValueError, match=r"spacing_mm \(1, 1, 1\) does not match 2D"):
        metrics.hausdorff(seg, seg, spacing_mm=(1, 1, 1))
    with pytest.raises(ValueError, match="two non-empty masks"):
        surfaces.surface_distances(seg == 3, empty == 3, (1.0, 1.0))


@pytest.mark.parametrize("shape", [(12, 14), (8, 10, 12)])
def test_jacobian_of_identity_scaling_and_fold(shape):
    ndims = len(shape)
    zero = np.zeros((*shape, ndims))
    np.testing.assert_allclose(metrics.jacobian_determinant(zero), 1.0)
    assert metrics.folding_percent(zero) == 0.0 and metrics.sd_log_jacobian(zero) == 0.0
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"),
                    axis=-1)
    np.testing.assert_allclose(metrics.jacobian_determinant(0.5 * grid), 1.5**ndims)
    fold = np.zeros((*shape, ndims))
    fold[..., 0] = -2.0 * grid[..., 0]  # x0 -> -x0: orientation reversed
    np.testing.assert_allclose(metrics.jacobian_determinant(fold), -1.0)
    assert metrics.folding_percent(fold) == 100.0


def test_folding_is_found_where_it_happens():
    disp = np.zeros((20, 20, 2))
    disp[8:12, :, 0] = np.array([0.0, -2.5, -2.5, 0.0])[:, None]  # rows overtake each other
    jac = metrics.jacobian_determinant(disp)
    assert (jac[8:12] <= 0).any() and (jac[:6] == 1).all()
    assert 0 < metrics.folding_percent(disp) < 50


@pytest.fixture
def surface_distance():
    """DeepMind's package, the reference for `vxm_tf.surfaces` (in the test extra)."""
    return pytest.importorskip("surface_distance",
                               reason="the reference surface-distance package is not installed")


def blobs(shape, seed, nb_labels=4):
    """Random smooth label map, touching the image border here and there."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    return np.digitize(noise, np.quantile(noise, np.linspace(0, 1, nb_labels + 1)[1:-1]))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.0, 0.7), (1.0, 1.0, 1.0),
                                     (1.5, 1.0, 2.5), (0.8, 3.0, 1.2)])
def test_surface_element_sizes_match_the_reference_tables(spacing, surface_distance):
    lookup_tables = surface_distance.lookup_tables
    if len(spacing) == 2:
        kernel = lookup_tables.ENCODE_NEIGHBOURHOOD_2D_KERNEL
        reference = lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
    else:
        kernel = lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL
        reference = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    corners = list(np.ndindex(*kernel.shape))  # bit k of our code is corner k, in this order
    ours = surfaces.element_sizes(spacing)
    for code in range(len(ours)):
        theirs = sum(int(kernel[c]) for bit, c in enumerate(corners) if code >> bit & 1)
        assert ours[code] == pytest.approx(reference[theirs], abs=1e-12), code


@pytest.mark.parametrize("shape, spacing", [((48, 40), (1.0, 1.0)), ((48, 40), (2.0, 0.7)),
                                            ((24, 20, 18), (1.0, 1.0, 1.0)),
                                            ((24, 20, 18), (1.5, 1.0, 2.5))])
def test_hausdorff_and_surface_distances_match_the_reference(shape, spacing, surface_distance):
    seg_a, seg_b = blobs(shape, 0), blobs(shape, 1)
    for label in range(4):
        a, b = seg_a == label, seg_b == label
        theirs = surface_distance.compute_surface_distances(a, b, spacing)
        ours = surfaces.surface_distances(a, b, spacing)
        keys = ("distances_gt_to_pred", "surfel_areas_gt", "distances_pred_to_gt",
                "surfel_areas_pred")
        for key, value in zip(keys, ours):
            np.testing.assert_allclose(value, theirs[key], rtol=1e-12, err_msg=key)
        for percent in (100, 95, 50):
            assert metrics.hausdorff(seg_a, seg_b, [label], spacing, percent)[label] == (
                surface_distance.compute_robust_hausdorff(theirs, percent))
