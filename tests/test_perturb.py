import numpy as np
import pytest

from vxm_tf import data
from vxm_tf.perturb import PERTURBATIONS, parse_perturbations, perturb


@pytest.fixture
def image():
    return data.synthetic_volumes(1, (48, 40)).images[0]


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_strength_zero_is_the_identity(image, name):
    np.testing.assert_allclose(perturb(image, [(name, 0.0)], seed=1), image, atol=1e-6)


@pytest.mark.parametrize("name, strength", [("brightness", 0.4), ("brightness", -0.4),
                                            ("offset", 0.3), ("gamma", 1.0), ("gamma", -1.0),
                                            ("bias", 0.5), ("noise", 0.1)])
def test_perturbations_are_seeded_finite_in_range_and_keep_shape(image, name, strength):
    a = perturb(image, [(name, strength)], seed=3)
    assert a.shape == image.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 2
    np.testing.assert_array_equal(a, perturb(image, [(name, strength)], seed=3))
    assert not np.allclose(a, image)
    if name in ("bias", "noise"):
        assert not np.array_equal(a, perturb(image, [(name, strength)], seed=4))


def test_named_strengths_mean_what_they_say(image):
    np.testing.assert_allclose(perturb(image, [("brightness", -0.4)]), 0.6 * image, rtol=1e-6)
    np.testing.assert_allclose(perturb(image, [("gamma", 1.0)]), image ** 2, atol=1e-6)
    bias = perturb(image, [("bias", 0.3)], seed=0)
    ratio = bias[image > 0.2] / image[image > 0.2]
    assert 0.3 < ratio.min() and ratio.max() < 3 and ratio.std() > 0.05


def test_spec_parsing_and_one_line_errors():
    assert parse_perturbations("gamma:0.5, noise:0.02") == [("gamma", 0.5), ("noise", 0.02)]
    assert parse_perturbations("") == []
    with pytest.raises(ValueError, match="unknown perturbation 'contrast'.*brightness"):
        parse_perturbations("contrast:0.2")
    with pytest.raises(ValueError, match="'gamma' needs a numeric strength"):
        parse_perturbations("gamma")
