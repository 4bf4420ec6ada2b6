"""Random augmentation of one subject (image and segmentation together), numpy/scipy.

The same spatial transform moves the image (linear) and its label map (nearest); a
left-right flip also swaps Left-* and Right-* labels, found by name. Draws come from the
`numpy.random.Generator` given, so a seed fixes the result.
"""

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from vxm_tf.flagging import option
from vxm_tf.perturb import smooth_field


@dataclass(frozen=True)
class Augmentation:
    """Augmentation strengths; all zero / False (the default) is no augmentation. The
    fields' metadata are their training flags (`vxm_tf.configs`).

    rotate_deg: maximum absolute rotation per axis pair, degrees (uniform).
    flip: flip along `flip_axis` with probability 0.5 (axis 0 is left-right in
        neurite-OASIS).
    intensity_shift: maximum absolute offset added (uniform).
    intensity_scale: maximum relative change of contrast, factor in [1 - s, 1 + s].
    gamma: maximum absolute log-gamma; intensities go to x ** exp(U(-gamma, gamma)).
    bias: maximum bias-field strength; intensities go to x * exp(U(0, bias) * field), a
        smooth random field of unit standard deviation (`vxm_tf.perturb.smooth_field`).
    noise: standard deviation of added Gaussian noise.
    clean_targets: training compares images without their intensity changes: the network
        sees intensity-augmented scans, the similarity loss the same scans only spatially
        augmented (so it never rewards matching a brightness change).
    """

    rotate_deg: float = option(0.0, "augmentation: max rotation, degrees", flag="aug_rotate")
    flip: bool = option(False, "augmentation: random left-right flip", flag="aug_flip")
    flip_axis: int = 0
    intensity_shift: float = option(0.0, "augmentation: max intensity offset", flag="aug_shift")
    intensity_scale: float = option(0.0, "augmentation: max relative contrast", flag="aug_scale")
    gamma: float = option(0.0, "augmentation: max absolute log-gamma", flag="aug_gamma")
    bias: float = option(0.0, "augmentation: max bias-field strength (log scale)",
                         flag="aug_bias")
    noise: float = option(0.0, "augmentation: noise standard deviation", flag="aug_noise")
    clean_targets: bool = option(False, "augmentation: the similarity loss compares the "
                                 "scans without their intensity changes (unidirectional "
                                 "training only)", flag="aug_clean_targets")

    def __post_init__(self):
        flag = {f.name: f.metadata.get("flag") for f in fields(self)}
        for name in ("rotate_deg", "intensity_shift", "intensity_scale", "gamma", "bias",
                     "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation {name} (--{flag[name]}) must be "
                                 f"non-negative, got {getattr(self, name)}")
        if self.intensity_scale >= 1:
            raise ValueError(f"augmentation intensity_scale (--aug_scale) must be below 1, "
                             f"got {self.intensity_scale}")

    @property
    def enabled(self):
        return any([self.rotate_deg, self.flip, self.intensity_shift, self.intensity_scale,
                    self.gamma, self.bias, self.noise])


def left_right_swap(label_names):
    """Lookup table `table[label] -> label` that swaps Left-X and Right-X ids by name."""
    by_name = {name: k for k, name in label_names.items()}
    table = np.arange(max(label_names, default=0) + 1, dtype=np.int32)
    for name, k in by_name.items():
        for this, other in (("Left", "Right"), ("left", "right")):
            if name.startswith(this) and name.replace(this, other, 1) in by_name:
                partner = by_name[name.replace(this, other, 1)]
                table[k], table[partner] = partner, k
    return table


def rotation_matrix(angles_deg):
    """Rotation: one angle in 2D, three (about axes 0, 1, 2) in 3D."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if a.size == 1:
        c, s = np.cos(a[0]), np.sin(a[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(a):
        i, j = [k for k in range(3) if k != axis]
        rot = np.eye(3)
        rot[i, i] = rot[j, j] = np.cos(angle)
        rot[i, j], rot[j, i] = -np.sin(angle), np.sin(angle)
        matrix = matrix @ rot
    return matrix


def augment_spatial(image, seg, augmentation, rng, lr_table=None):
    """Rotate and flip `image` (*spatial) float32 (linear) and `seg` int or None (nearest)."""
    ndims = image.ndim
    if augmentation.rotate_deg:
        angles = rng.uniform(-augmentation.rotate_deg, augmentation.rotate_deg,
                             1 if ndims == 2 else 3)
        matrix = rotation_matrix(angles)
        centre = (np.asarray(image.shape) - 1) / 2
        offset = centre - matrix @ centre
        image = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant")
        if seg is not None:
            seg = ndimage.affine_transform(seg, matrix, offset, order=0, mode="constant")
    if augmentation.flip and rng.random() < 0.5:
        image = np.flip(image, augmentation.flip_axis)
        if seg is not None:
            seg = np.flip(seg, augmentation.flip_axis)
            if lr_table is not None:
                known = seg < len(lr_table)
                seg = np.where(known, lr_table[np.where(known, seg, 0)], seg)
    image = np.ascontiguousarray(image, dtype=np.float32)
    return image, None if seg is None else np.ascontiguousarray(seg, dtype=np.int32)


def augment_intensity(image, augmentation, rng):
    """Gamma, bias field, contrast, offset and noise of `image` (*spatial); float32.

    Intensities are not clipped: a brightness change is meant to reach the network as it is.
    """
    if augmentation.gamma:
        gamma = np.exp(rng.uniform(-augmentation.gamma, augmentation.gamma))
        image = np.clip(image, 0, None) ** gamma
    if augmentation.bias:
        strength = rng.uniform(0, augmentation.bias)
        image = image * np.exp(strength * smooth_field(image.shape, rng))
    if augmentation.intensity_scale:
        image = image * rng.uniform(1 - augmentation.intensity_scale,
                                    1 + augmentation.intensity_scale)
    if augmentation.intensity_shift:
        image = image + rng.uniform(-augmentation.intensity_shift, augmentation.intensity_shift)
    if augmentation.noise:
        image = image + rng.normal(0, augmentation.noise, image.shape)
    return np.ascontiguousarray(image, dtype=np.float32)


def augment(image, seg, augmentation, rng, lr_table=None):
    """Augment one subject: `image` (*spatial) float32, `seg` (*spatial) int or None.

    Spatial, then intensity augmentation. Returns (image float32, seg int32 or None) of the
    same shapes.
    """
    image, seg = augment_spatial(image, seg, augmentation, rng, lr_table)
    return augment_intensity(image, augmentation, rng), seg
