"""Intensity perturbations of moving images, to test robustness to brightness differences.

A perturbation is a name and a strength; strength 0 is the identity for every name:

    brightness  s   image * (1 + s)                      s in [-0.4, 0.4]: scale 0.6 to 1.4
    offset      s   image + s
    gamma       s   image ** (2 ** s)                    s in [-1, 1]: gamma 0.5 to 2
    bias        s   image * exp(s * smooth field)        field: smooth noise, unit std
    noise       s   image + N(0, s^2) per voxel

Results are clipped to [0, 2] (inputs are images in [0, 1]) and always finite. A spec
string combines them in order: "gamma:0.5,noise:0.02". Draws come from the seed given.
"""

import numpy as np
from scipy import ndimage

PERTURBATIONS = ("brightness", "offset", "gamma", "bias", "noise")
MAX_INTENSITY = 2.0


def parse_perturbations(spec):
    """'name:strength,...' -> [(name, strength)]; '' -> []."""
    parsed = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition(":")
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r} in {spec!r}; choose from "
                             f"{', '.join(PERTURBATIONS)}")
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"perturbation {item!r} needs a numeric strength, as in "
                             f"'{name}:0.2'") from None
        if not np.isfinite(strength):
            raise ValueError(f"perturbation {item!r}: strength must be finite")
        parsed.append((name, strength))
    return parsed


def smooth_field(shape, rng, sigma_fraction=0.25):
    """Smooth random field of unit standard deviation (a scanner-like bias shape)."""
    coarse = [max(2, int(round(1 / sigma_fraction))) for _ in shape]
    field = ndimage.zoom(rng.standard_normal(coarse), [n / c for n, c in zip(shape, coarse)],
                         order=3, mode="nearest")
    field = field - field.mean()
    return field / max(field.std(), 1e-8)


def perturb(image, perturbations, seed=0):
    """Apply `[(name, strength)]` to `image` (*spatial) in [0, 1]; returns float32."""
    rng = np.random.default_rng(seed)
    out = np.asarray(image, dtype=np.float64)
    for name, strength in perturbations:
        if name == "brightness":
            out = out * (1.0 + strength)
        elif name == "offset":
            out = out + strength
        elif name == "gamma":
            out = np.clip(out, 0, None) ** (2.0 ** strength)
        elif name == "bias":
            out = out * np.exp(strength * smooth_field(out.shape, rng))
        elif name == "noise":
            out = out + rng.normal(0.0, abs(strength), out.shape)
        else:
            raise ValueError(f"unknown perturbation {name!r}; choose from "
                             f"{', '.join(PERTURBATIONS)}")
    return np.clip(out, 0.0, MAX_INTENSITY).astype(np.float32)
