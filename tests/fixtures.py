"""Small on-disk datasets that tests build in a temporary folder."""

import nibabel as nib
import numpy as np


def fake_oasis(root, shapes, labels=("Left-Thing", "Right-Thing")):
    """A tiny neurite-OASIS 3D folder: one subject per shape."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"OASIS_OAS1_{i:04d}_MR1" for i in range(len(shapes))]
    (root / "subjects.txt").write_text("\n".join(names) + "\n")
    table = ["#ID   Label Name   R G B A", "0 Unknown 0 0 0 0"]
    table += [f"{k} {n} 1 2 3 0" for k, n in enumerate(labels, 1)]
    (root / "seg35_labels.txt").write_text("\n".join(table) + "\n")
    rng = np.random.default_rng(0)
    for name, shape in zip(names, shapes):
        (root / name).mkdir()
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), np.eye(4)),
                 str(root / name / "aligned_norm.nii.gz"))
        seg = rng.integers(0, len(labels) + 1, shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / name / "aligned_seg35.nii.gz"))
    return root
