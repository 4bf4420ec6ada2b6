"""The data side: datasets, splits and pairs, volumes in memory, augmentation, tf.data."""

from vxm_tf.data.augment import Augmentation, augment, left_right_swap
from vxm_tf.data.datasets import (
    Dataset,
    DatasetError,
    Subject,
    all_pairs,
    atlas_pairs,
    list_dataset,
    oasis_dataset,
    read_label_table,
    split_subjects,
)
from vxm_tf.data.pipeline import pair_dataset
from vxm_tf.data.synthetic import synthetic_volumes
from vxm_tf.data.volumes import (
    Volumes,
    append_atlas,
    cached_dataset,
    load_volumes,
    prepare_cache,
    resize_volume,
)

__all__ = [
    "Augmentation", "Dataset", "append_atlas", "DatasetError", "Subject", "Volumes", "all_pairs",
    "atlas_pairs",
    "augment", "cached_dataset", "left_right_swap", "list_dataset", "load_volumes",
    "oasis_dataset", "pair_dataset", "prepare_cache", "read_label_table", "resize_volume",
    "split_subjects", "synthetic_volumes",
]
