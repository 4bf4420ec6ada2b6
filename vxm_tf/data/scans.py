"""Template training data: batches of single scans (and their attributes), for any backend.

`ScanSource` streams the subjects of a split, as `PairSource` streams pairs (same order
from the seed, same resumable stream, the same `tf.data` and `PyDataset` adapters), in the
batch structure of `vxm_tf.templates`:
- unconditional: inputs `(scan,)`, targets `(scan, scan, zeros, zeros)`;
- conditional: inputs `(attributes, base template, scan)`, targets `(scan, zeros, zeros,
  zeros)`;
scans and the base template `(B, *spatial, 1)` float32, zeros `(B, *spatial, D)`.
`read_attributes` turns a CSV of subject attributes into the networks' input.
"""

import csv
import math

import numpy as np

from vxm_tf.data.datasets import DatasetError
from vxm_tf.data.pairs import PairSource


class ScanSource:
    """Batches of the scans of `volumes` for template training, numpy in and out.

    Args:
        volumes: a `Volumes` split.
        batch_size, shuffle, seed, repeat, drop_remainder, shard: as `PairSource`'s.
        attributes: `(N, A)` float32 per subject (conditional templates), or None.
        base: the base template `(*spatial)` the conditional network adds to (needed with
            `attributes`).
    """

    def __init__(self, volumes, batch_size=1, shuffle=True, seed=0, repeat=False,
                 drop_remainder=False, shard=(0, 1), attributes=None, base=None):
        if attributes is not None:
            attributes = np.asarray(attributes, np.float32)
            if len(attributes) != len(volumes) or base is None:
                raise ValueError("attributes need one row per subject and a base template")
        self.pairs = PairSource(volumes, [(k, k) for k in range(len(volumes))], batch_size,
                                shuffle, seed, with_segs=False, repeat=repeat,
                                drop_remainder=drop_remainder, shard=shard,
                                flow_shape=(*volumes.shape, len(volumes.shape)))
        self.volumes, self.attributes = volumes, attributes
        self.base = None if base is None else np.asarray(base, np.float32)
        self.repeat = repeat

    @property
    def batches_per_pass(self):
        return self.pairs.batches_per_pass

    def batch(self, index):
        """Batch `index` of the stream: `(inputs, targets)` tuples of numpy arrays."""
        subjects = self.pairs.pair_indices(index)[:, 0]
        scans = self.volumes.images[subjects][..., None].astype(np.float32)
        zeros = np.zeros((len(scans), *self.pairs.flow_shape), np.float32)
        if self.attributes is None:
            return (scans,), (scans, scans, zeros, zeros)
        base = np.repeat(self.base[None, ..., None], len(scans), axis=0)
        return (self.attributes[subjects], base, scans), (scans, zeros, zeros, zeros)


# how a CSV marks a value as not recorded
MISSING = ("", "n/a", "na", "nan", "?", "-")


def _matches(name, subject_id):
    return name == subject_id or name.endswith("_" + subject_id)


def read_attributes(path, columns, names, encoding=None):
    """Attributes of the subjects `names` from the CSV `path` (an `ID` column; a subject
    matches the row whose ID its name is or ends with, e.g. OASIS_OAS1_0001_MR1 and
    OAS1_0001_MR1). `columns`: the columns to read, in order.

    Numbers are standardised, two-valued text columns (M/F) become 0 and 1; `encoding`
    (from an earlier call, e.g. the training subjects') fixes the means, deviations and
    values, else they are those of `names`. Returns `((N, A) float32, encoding)`;
    `DatasetError` naming the file, column or subject that is missing or unusable.
    """
    if len(set(columns)) != len(columns):
        raise DatasetError(f"--attributes={','.join(columns)}: a column is named twice")
    try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.DictReader(file))
    except OSError as err:
        raise DatasetError(f"--attributes_csv={path}: {err.strerror or err}") from None
    if not rows or "ID" not in rows[0]:
        raise DatasetError(f"--attributes_csv={path}: no ID column")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DatasetError(f"--attributes={','.join(columns)}: {path} has no column "
                           f"{', '.join(missing)} (it has {', '.join(rows[0])})")
    table = []
    for name in names:
        found = [r for r in rows if _matches(name, r["ID"])]
        if not found:
            raise DatasetError(f"{path}: no row for subject {name}")
        if len(found) > 1:
            raise DatasetError(f"{path}: subject {name} matches {len(found)} rows "
                               f"({', '.join(r['ID'] for r in found)})")
        row = found[0]
        values = [row[c].strip() for c in columns]
        empty = [c for c, v in zip(columns, values) if v.lower() in MISSING]
        if empty:
            raise DatasetError(f"{path}: subject {name} has no {', '.join(empty)}")
        table.append(values)
    encoding = encoding or {c: _encoding(c, [v[k] for v in table], path)
                            for k, c in enumerate(columns)}
    encoded = np.array([[_encode(v, encoding[c], c, path) for c, v in zip(columns, values)]
                        for values in table], np.float32)
    return encoded.reshape(len(names), len(columns)), encoding


def _number(value):
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _encoding(column, values, path):
    """Numbers standardised (with their range); text of two values as 0 and 1. A column of
    numbers with some text is an error naming the text (a missing-value marker, a typo)."""
    numbers = [_number(v) for v in values]
    if all(n is None for n in numbers):
        kinds = sorted(set(values))
        if len(kinds) > 2:
            raise DatasetError(f"{path}: column {column} is neither numeric nor two-valued "
                               f"({', '.join(kinds[:5])}...)")
        return {"values": kinds}
    text = [v for v, n in zip(values, numbers) if n is None]
    if text:
        raise DatasetError(f"{path}: column {column} holds numbers and {column}={text[0]}, "
                           "which is not a number (mark a missing value as empty or N/A)")
    numbers = np.array(numbers)
    std = float(numbers.std())
    return {"mean": float(numbers.mean()), "std": std if std > 0 else 1.0,
            "min": float(numbers.min()), "max": float(numbers.max())}


def encode_attribute(value, spec, column, source="--attributes"):
    """One attribute value (a number or a category) as the network takes it."""
    return _encode(str(value), spec, column, source)


def _encode(value, spec, column, path):
    if "values" in spec:
        if value not in spec["values"]:
            raise DatasetError(f"{path}: {column}={value} is none of "
                               f"{', '.join(spec['values'])}")
        return float(spec["values"].index(value))
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{path}: {column}={value} is not a number") from None
    if not math.isfinite(number):
        raise DatasetError(f"{path}: {column}={value} is not a finite number")
    return (number - spec["mean"]) / spec["std"]
