"""The embedded default dataset: random smooth label maps and images, no files needed.

Every subject is one random template anatomy (blobby labels inside an ellipsoid "head")
warped by its own smooth random deformation, rendered with per-label intensities, blur and
noise. Registering two subjects is therefore a real (if easy) deformable problem with
known labels, so the main job runs and is scored on a fresh machine with no data.
"""

import numpy as np
from scipy import ndimage

from vxm_tf import geometry
from vxm_tf.data.volumes import Volumes


def smooth_noise(shape, sigma, rng):
    """Gaussian-filtered white noise scaled to unit standard deviation, `shape`."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(field.std(), 1e-8)


def random_displacement(shape, amplitude, sigma, rng):
    """Smooth random displacement `(*shape, D)` in voxels, standard deviation `amplitude`."""
    return np.stack([amplitude * smooth_noise(shape, sigma, rng) for _ in shape], axis=-1)


def template_labels(shape, nb_labels, rng):
    """Labels 1..nb_labels as smooth blobs inside a centred ellipsoid; 0 outside."""
    shape = tuple(shape)
    sigma = min(shape) / 10
    scores = np.stack([smooth_noise(shape, sigma, rng) for _ in range(nb_labels)])
    labels = np.argmax(scores, axis=0).astype(np.int32) + 1
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    labels[sum(g**2 for g in grid) > 0.8**2] = 0
    return labels


def synthetic_volumes(count, shape=(64, 64), nb_labels=8, seed=0, deformation=None,
                      noise=0.02):
    """`count` random subjects sharing one template anatomy.

    Args:
        count: number of subjects.
        shape: spatial shape, 2D or 3D.
        nb_labels: foreground labels (1..nb_labels).
        seed: template and subjects are all drawn from it.
        deformation: displacement standard deviation in voxels (default shape / 32).
        noise: Gaussian noise standard deviation on the [0, 1] intensities.

    Returns:
        `Volumes` with images in [0, 1] and label maps.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"synthetic shape must be 2D or 3D, got {shape}")
    if count < 1:
        raise ValueError(f"synthetic subject count must be positive, got {count}")
    rng = np.random.default_rng(seed)
    template = template_labels(shape, nb_labels, rng)
    means = np.concatenate([[0.0], rng.permutation(np.linspace(0.25, 1.0, nb_labels))])
    amplitude = deformation if deformation is not None else min(shape) / 32
    images, segs = [], []
    for _ in range(count):
        disp = random_displacement(shape, amplitude, min(shape) / 8, rng)
        seg = geometry.warp(template, disp, order=0)
        jitter = np.concatenate([[0.0], rng.normal(0, 0.03, nb_labels)])
        image = ndimage.gaussian_filter((means + jitter)[seg], 1.0)
        image = image + rng.normal(0, noise, shape)
        images.append(np.clip(image, 0, 1).astype(np.float32))
        segs.append(seg.astype(np.int32))
    names = [f"synthetic_{i:03d}" for i in range(count)]
    label_names = {0: "background", **{k: f"label_{k}" for k in range(1, nb_labels + 1)}}
    return Volumes(names, np.stack(images), np.stack(segs), label_names)
