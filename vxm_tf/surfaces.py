"""Surface distances between two binary masks, weighted by surface-element size (numpy/scipy).

The definition of DeepMind's `surface-distance` package, which the Learn2Reg evaluation uses:
the surface of a mask lives on the grid of voxel corners. A corner is on the surface when
the 2^D voxels around it are neither all inside nor all outside; the surface element there
is the marching-squares contour (2D, a length in mm) or marching-cubes patch (3D, an area in
mm^2) through the midpoints of the cut edges of that 2^D block. Each surface element of one
mask is scored by its distance (mm) to the nearest surface corner of the other, and
percentiles weight elements by their size.

Where a marching-cubes polygon is not planar, the triangulation is the one of largest area in
voxel units (what the classic marching-cubes table chooses); ties have equal area at any
spacing. tests/test_metrics.py checks the results against the package itself.
"""

import functools
import itertools

import numpy as np
from scipy import ndimage


def _corner_offsets(ndims):
    """The 2^D corners of a unit block; corner k is bit k of a neighbourhood code."""
    return list(itertools.product((0, 1), repeat=ndims))


def _neighbour(corner, axis):
    return tuple(v ^ (i == axis) for i, v in enumerate(corner))


def _components(corners, ndims):
    """Groups of `corners` connected along block edges."""
    left, groups = set(corners), []
    while left:
        stack = [left.pop()]
        group = set(stack)
        while stack:
            corner = stack.pop()
            for axis in range(ndims):
                other = _neighbour(corner, axis)
                if other in left:
                    left.remove(other)
                    group.add(other)
                    stack.append(other)
        groups.append(group)
    return groups


def _next_cut_on_face(edge, face_axes, group):
    """Walking a block face from edge (inside, outside), the next cut edge of `group`."""
    inside, outside = edge
    ring = []
    for u, v in ((0, 0), (1, 0), (1, 1), (0, 1)):
        corner = list(inside)
        corner[face_axes[0]], corner[face_axes[1]] = u, v
        ring.append(tuple(corner))
    start = ring.index(inside)
    ring = ring[start:] + ring[:start]
    if ring[1] != outside:
        ring = [ring[0]] + ring[:0:-1]
    for k in range(1, 4):
        if ring[(k + 1) % 4] in group:
            return ring[(k + 1) % 4], ring[k]
    raise AssertionError("a cut edge always closes on its face")


def _contours(group, ndims):
    """Closed polygons (3D) or segments (2D) around `group`: lists of cut edges in order."""
    cut = [(c, _neighbour(c, axis)) for c in sorted(group) for axis in range(ndims)]
    cut = [edge for edge in cut if edge[1] not in group]
    if ndims == 2:
        return [cut]
    following = {}
    for edge in cut:
        axis = next(a for a in range(3) if edge[0][a] != edge[1][a])
        following[edge] = [_next_cut_on_face(edge, [a for a in range(3) if a != fixed], group)
                           for fixed in range(3) if fixed != axis]
    polygons, seen = [], set()
    for edge in cut:
        if edge in seen:
            continue
        polygon, previous = [edge], None
        seen.add(edge)
        while True:
            ahead = [e for e in following[polygon[-1]] if e != previous and e not in seen]
            if not ahead:
                break
            previous = polygon[-1]
            polygon.append(ahead[0])
            seen.add(ahead[0])
        polygons.append(polygon)
    return polygons


def _triangulations(vertices):
    """Every triangulation of the polygon `vertices` (indices), as lists of triangles."""
    if len(vertices) < 3:
        return [[]]
    first, last = vertices[0], vertices[-1]
    return [left + right + [(first, vertices[k], last)]
            for k in range(1, len(vertices) - 1)
            for left in _triangulations(vertices[:k + 1])
            for right in _triangulations(vertices[k:])]


def _triangle_areas(triangles, spacing):
    """Areas of triangles `(T, 3, 3)` given in voxel units, at `spacing` (mm)."""
    scaled = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3) * spacing
    return 0.5 * np.linalg.norm(np.cross(scaled[:, 1] - scaled[:, 0],
                                         scaled[:, 2] - scaled[:, 0]), axis=-1)


@functools.lru_cache(maxsize=2)
def _surface_elements(ndims):
    """Per neighbourhood code, the surface pieces in voxel units.

    2D: a list of segments `(2, 2)`; 3D: a list of triangles `(3, 3)`. The smaller side of
    the block (inside or outside corners, inside on a tie) is cut off corner group by corner
    group.
    """
    corners = _corner_offsets(ndims)
    elements = []
    for code in range(2 ** len(corners)):
        inside = [c for bit, c in enumerate(corners) if code >> bit & 1]
        side = inside if 2 * len(inside) <= len(corners) else sorted(set(corners) - set(inside))
        pieces = []
        for group in _components(side, ndims):
            for contour in _contours(group, ndims):
                points = np.array([np.add(a, b) / 2.0 for a, b in contour])
                if ndims == 2:
                    pieces.append(points)
                    continue
                options = _triangulations(list(range(len(points))))
                best = max(options, key=lambda t: _triangle_areas(points[np.array(t)],
                                                                  1.0).sum())
                pieces.extend(points[np.array(best)])
        elements.append(np.array(pieces).reshape(-1, ndims, ndims))
    return elements


def element_sizes(spacing_mm):
    """`(2^(2^D),)` contour length (2D, mm) or surface area (3D, mm^2) per neighbourhood code."""
    return _element_sizes(tuple(float(s) for s in spacing_mm)).copy()


@functools.lru_cache(maxsize=16)
def _element_sizes(spacing_mm):
    spacing = np.asarray(spacing_mm)
    elements = _surface_elements(len(spacing))
    if len(spacing) == 2:
        return np.array([np.linalg.norm((e[:, 1] - e[:, 0]) * spacing, axis=-1).sum()
                         for e in elements])
    return np.array([_triangle_areas(e, spacing).sum() for e in elements])


def neighbour_codes(mask):
    """Code of the 2^D voxels around each corner of `mask` (zero outside), `(*(shape + 1))`."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1).astype(np.uint8)
    codes = np.zeros([n - 1 for n in padded.shape], dtype=np.uint8)
    for bit, corner in enumerate(_corner_offsets(mask.ndim)):
        window = tuple(slice(o, o + n) for o, n in zip(corner, codes.shape))
        codes |= padded[window] << bit
    return codes


def surface_distances(mask_a, mask_b, spacing_mm):
    """Distances between the surfaces of two non-empty bool masks of the same shape.

    Returns `(distances_a_to_b, sizes_a, distances_b_to_a, sizes_b)`: for each surface
    element of one mask, its distance (mm) to the other surface and its size (mm or mm^2),
    sorted by distance.
    """
    if mask_a.shape != mask_b.shape or not mask_a.any() or not mask_b.any():
        raise ValueError(f"surface distances need two non-empty masks of one shape, got "
                         f"{mask_a.shape} with {mask_a.sum()} and {mask_b.shape} with "
                         f"{mask_b.sum()} voxels inside")
    union = np.logical_or(mask_a, mask_b)
    box = tuple(slice(idx.min(), idx.max() + 1) for idx in np.nonzero(union))
    sizes = element_sizes(spacing_mm)
    full = 2 ** (2 ** mask_a.ndim) - 1
    codes = [neighbour_codes(m[box]) for m in (mask_a, mask_b)]
    borders = [(c != 0) & (c != full) for c in codes]
    nearest = [ndimage.distance_transform_edt(~b, sampling=spacing_mm) for b in borders]
    result = []
    for this, other in ((0, 1), (1, 0)):
        distances = nearest[other][borders[this]]
        weights = sizes[codes[this][borders[this]]]
        order = np.lexsort((weights, distances))
        result += [distances[order], weights[order]]
    return tuple(result)


def robust_hausdorff(mask_a, mask_b, spacing_mm, percent=100.0):
    """Symmetric `percent` percentile of surface distance (mm), elements weighted by size."""
    distances_ab, sizes_a, distances_ba, sizes_b = surface_distances(mask_a, mask_b,
                                                                     spacing_mm)

    def percentile(distances, sizes):
        cumulative = np.cumsum(sizes) / np.sum(sizes)
        index = np.searchsorted(cumulative, percent / 100.0)
        return distances[min(index, len(distances) - 1)]

    return float(max(percentile(distances_ab, sizes_a), percentile(distances_ba, sizes_b)))
