"""The data side: datasets, splits and pairs, volumes in memory, augmentation, the pair
source and its adapters (`pair_dataset`, tf.data, imports TensorFlow on first use)."""

from vxm_tf.data.augment import Augmentation, augment, left_right_swap
from vxm_tf.data.cache import cached_dataset, prepare_cache
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
from vxm_tf.data.fit import fit_data
from vxm_tf.data.pairs import PairSequence, PairSource, hyper_draws
from vxm_tf.data.scans import ScanSource, encode_attribute, read_attributes
from vxm_tf.data.synthetic import synthetic_volumes
from vxm_tf.data.volumes import (
    LazyStack,
    Volumes,
    append_atlas,
    load_volumes,
    resize_volume,
)

__all__ = [
    "Augmentation", "Dataset", "DatasetError", "LazyStack", "PairSequence", "PairSource",
    "ScanSource", "Subject", "encode_attribute", "read_attributes",
    "Volumes", "all_pairs", "append_atlas", "atlas_pairs", "augment", "cached_dataset",
    "fit_data", "hyper_draws", "left_right_swap", "list_dataset", "load_volumes", "oasis_dataset",
    "pair_dataset", "prepare_cache", "read_label_table", "resize_volume", "split_subjects",
    "synthetic_volumes",
]


def __getattr__(name):
    if name == "pair_dataset":  # tf.data: TensorFlow only, imported when asked for
        from vxm_tf.data.pipeline import pair_dataset

        return pair_dataset
    raise AttributeError(f"module 'vxm_tf.data' has no attribute {name!r}")
