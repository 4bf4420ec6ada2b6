"""Figures (matplotlib, PNG): registered pairs and per-structure Dice box plots.

2D images are shown as they are; 3D volumes by their middle slice along each axis, one
row per axis. Files are written to a temporary name and renamed.
"""


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vxm_tf import files, metrics  # noqa: E402


def save_figure(fig, path):
    try:
        files.save_figure(fig, path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def _slices(volume, ndims):
    """[(axis name, 2D slice)] of a 2D image or the middle slices of a 3D volume."""
    if ndims == 2:
        return [("", volume)]
    return [(f"axis {a}", np.take(volume, volume.shape[a] // 2, axis=a)) for a in range(3)]


def slices_figure(images, titles, path):
    """Images side by side (one column each, titled), one row per middle slice."""
    ndims = images[0].ndim
    rows = _slices(images[0], ndims)
    fig, axes = plt.subplots(len(rows), len(images), figsize=(3.2 * len(images),
                                                             3.2 * len(rows)), squeeze=False)
    for c, (image, title) in enumerate(zip(images, titles)):
        for r, (axis, view) in enumerate(_slices(image, ndims)):
            ax = axes[r, c]
            ax.imshow(view.T, cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(axis)
    save_figure(fig, path)


def _plot_grid(ax, disp2d, step=6):
    """Deformed grid lines x + u(x) of a 2D displacement `(H, W, 2)`."""
    h, w = disp2d.shape[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y, x = rows + disp2d[..., 0], cols + disp2d[..., 1]
    for i in range(0, h, step):
        ax.plot(x[i, :], y[i, :], color="k", linewidth=0.5)
    for j in range(0, w, step):
        ax.plot(x[:, j], y[:, j], color="k", linewidth=0.5)
    ax.set_xlim(0, w - 1)
    ax.set_ylim(h - 1, 0)
    ax.set_aspect("equal")


def pair_figure(moving, fixed, moved, disp, path, titles=None, title=""):
    """Moving / fixed / moved / |moved - fixed| / deformed grid / Jacobian determinant.

    Args:
        moving, fixed, moved: `(*spatial)` images; disp: `(*spatial, D)` in voxels.
        titles: optional row labels (one per model when `moved`/`disp` are lists).
    """
    moved_list = moved if isinstance(moved, list) else [moved]
    disp_list = disp if isinstance(disp, list) else [disp]
    ndims = fixed.ndim
    jacobians = [metrics.jacobian_determinant(d) for d in disp_list]
    rows = []
    for m, (mv, d, jac) in enumerate(zip(moved_list, disp_list, jacobians)):
        for s, (axis, _) in enumerate(_slices(fixed, ndims)):
            rows.append((m, s, axis, mv, d, jac))
    fig, axes = plt.subplots(len(rows), 6, figsize=(18, 3.2 * len(rows)), squeeze=False)
    for r, (m, s, axis, mv, d, jac) in enumerate(rows):
        label = f"{titles[m]} " if titles else ""
        picks = [_slices(v, ndims)[s][1] for v in (moving, fixed, mv)]
        diff = np.abs(picks[2] - picks[1])
        jac2d = _slices(jac, ndims)[s][1]
        if ndims == 2:
            disp2d = d
        else:
            keep = [k for k in range(3) if k != s]
            disp2d = np.take(d, d.shape[s] // 2, axis=s)[..., keep]
        panels = [("moving", picks[0], "gray"), ("fixed", picks[1], "gray"),
                  ("moved", picks[2], "gray"), ("|moved - fixed|", diff, "magma")]
        for c, (name, image, cmap) in enumerate(panels):
            axes[r, c].imshow(image, cmap=cmap, vmin=0, vmax=max(1.0, float(image.max())))
            axes[r, c].set_title(f"{label}{name} {axis}".strip(), fontsize=9)
        _plot_grid(axes[r, 4], disp2d)
        axes[r, 4].set_title(f"{label}deformation {axis}".strip(), fontsize=9)
        shown = axes[r, 5].imshow(jac2d, cmap="RdBu", vmin=0, vmax=2)
        axes[r, 5].contour(jac2d <= 0, levels=[0.5], colors="k", linewidths=0.5)
        axes[r, 5].set_title(f"{label}det J ({np.mean(jac <= 0) * 100:.2f}% <= 0)",
                             fontsize=9)
        fig.colorbar(shown, ax=axes[r, 5], fraction=0.046)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def structure_name(name):
    """'Left-Hippocampus' and 'Right-Hippocampus' -> 'Hippocampus' (merged in box plots)."""
    for side in ("Left-", "Right-", "left ", "right "):
        if name.startswith(side):
            return name[len(side):]
    return name


def dice_boxplot(label_rows, path, title="Dice per structure (left and right merged)"):
    """Box plot of Dice after registration per structure, one box per model.

    Args:
        label_rows: `{model name: rows}` with the `LABEL_FIELDS` of `vxm_tf.evaluation`;
            a model named 'identity' can give `dice_before` rows instead.
    """
    models = list(label_rows)
    per_structure = {}
    for m, name in enumerate(models):
        field = "dice_before" if name == "identity" else "dice_after"
        for row in label_rows[name]:
            value = float(row[field])
            if np.isfinite(value):
                key = structure_name(row["name"] or str(row["label"]))
                per_structure.setdefault(key, [[] for _ in models])[m].append(value)
    structures = sorted(per_structure, key=lambda k: -np.mean(per_structure[k][-1] or [0]))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(structures) * len(models)), 5))
    colours = plt.cm.tab10(np.arange(len(models)))
    for m, name in enumerate(models):
        positions = np.arange(len(structures)) + (m - (len(models) - 1) / 2) * width
        boxes = ax.boxplot([per_structure[s][m] for s in structures], positions=positions,
                           widths=width * 0.9, patch_artist=True, showfliers=False)
        for box in boxes["boxes"]:
            box.set_facecolor(colours[m])
        ax.plot([], [], color=colours[m], linewidth=8, label=name)
    ax.set_xticks(np.arange(len(structures)))
    ax.set_xticklabels(structures, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path)


def sweep_plot(rows, path):
    """Held-out Dice and folding against lambda (log axis), one point per trial."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    lam = [r["lambda"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lam, [r["val_dice"] for r in rows], "o-", color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("lambda (Grad weight)")
    ax.set_ylabel("held-out Dice", color="tab:blue")
    twin = ax.twinx()
    twin.plot(lam, [r["val_folding"] for r in rows], "s--", color="tab:red")
    twin.set_ylabel("folding (% voxels, det J <= 0)", color="tab:red")
    ax.set_title("lambda sweep")
    save_figure(fig, path)
