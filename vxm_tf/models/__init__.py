"""Registration models by name: `--model=vxm-brain-t1-3d-mse` wherever a model file is taken.

Each model has a folder here holding its card: `card.json` (what `Card` reads: the file's
sha256, the input it expects, its training, its scores, licence, citation, source) and
`README.md` (the same for a reader). vxm_tf's own models ship their weights in that folder
(`model.keras`, with the run's `config.json`, whose data paths are relative to the
repository). Models that are not redistributed (the VoxelMorph authors') are fetched once
with `python -m vxm_tf.models fetch NAME` (or `vxm-models fetch NAME`) into the user cache
`$VXM_TF_HOME/models` (default `~/.cache/vxm_tf/models`), from their public address or from a
local copy (`--from PATH`), and checked against the sha256 on the card; a file that does not
match is never kept.

`resolve(name_or_path)` turns a flag's value into a file path: an existing file is taken as
it is, a registered name gives its file, anything else is a one-line `ModelError`.
"""

import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

from vxm_tf.files import sha256

HERE = Path(__file__).resolve().parent
# where relative data paths in a shipped model's config.json start (the repository root when
# vxm_tf runs from its clone)
REPOSITORY = HERE.parents[1]
MODEL_SUFFIXES = (".keras", ".h5")


# what each kind of model does, as its card says it
KINDS = {
    "pairwise": "registers a moving scan onto a fixed one (VxmDense)",
    "hypermorph": "registers a moving scan onto a fixed one at any smoothness weight h in "
                  "[0, 1] (HyperVxmDense: `--hyper_lambda`)",
    "template": "a learned template (atlas) with the network that registers it onto "
                "scans (TemplateCreation: `vxm-template` writes it as NIfTI)",
    "conditional template": "templates for given attributes, e.g. age (the network "
                            "ConditionalTemplateCreation: `vxm-template --values` writes "
                            "them as NIfTI; register them with a pairwise model)",
}


class ModelError(ValueError):
    """A model name or file that cannot be used; the message names it and what to do."""


@dataclass(frozen=True)
class Card:
    """What a registered model is: read from its folder's `card.json`.

    name: the registry name (the folder's name).
    kind: what the model does, a key of `KINDS` (pairwise registration, HyperMorph, a
        learned template, a conditional template).
    file: the weights' file name (in the folder when shipped, else in the cache).
    sha256: hex digest of that file.
    shipped: True when the weights are in the package, False when fetched.
    url: public address to fetch from (fetched models).
    input: the input contract: shape (voxels), voxel size (mm), space / orientation,
        contrast, skull stripping, intensity range.
    training: one paragraph: data, losses, steps, command.
    scores: rows of pairwise scores `{"data", "pairs", "dice_before", "dice", "hd95_mm",
        "folding_percent", "command"}` (vxm-evaluate), or, for templates, of atlas-based
        segmentation `{"data", "subjects", "dice", "dice_sd", "compared", "command"}`.
    licence, citation, source: free text.
    run: the training run folder a shipped model came from (runs/NAME; not kept).
    """

    name: str
    file: str
    sha256: str
    shipped: bool
    kind: str = "pairwise"
    url: str = ""
    input: dict = field(default_factory=dict)
    training: str = ""
    scores: tuple = ()
    licence: str = ""
    citation: str = ""
    source: str = ""
    run: str = ""

    @property
    def folder(self):
        return HERE / self.name

    @property
    def path(self):
        """Where the weights are (or will be, once fetched: a folder per name in the
        cache)."""
        return self.folder / self.file if self.shipped else cache_dir() / self.name / self.file

    @property
    def available(self):
        return self.path.is_file()


def cache_dir():
    """`$VXM_TF_HOME/models`, default `~/.cache/vxm_tf/models` (XDG_CACHE_HOME respected)."""
    home = os.environ.get("VXM_TF_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        home = os.path.join(cache, "vxm_tf")
    return Path(home) / "models"


def read_card(folder):
    """The `Card` of one model folder."""
    values = json.loads((Path(folder) / "card.json").read_text())
    known = {f.name for f in fields(Card)} - {"name"}
    wrong = sorted(set(values) - known) + sorted({"file", "sha256", "shipped"} - set(values))
    if wrong:
        raise ModelError(f"{folder}/card.json: unknown or missing fields {', '.join(wrong)}")
    values["scores"] = tuple(values.get("scores", ()))
    if values.get("kind", "pairwise") not in KINDS:
        raise ModelError(f"{folder}/card.json: kind {values['kind']!r} is not one of "
                         f"{', '.join(KINDS)}")
    return Card(name=Path(folder).name, **values)


def cards():
    """Every registered model's card, by name (sorted). A folder whose card has no sha256
    yet (a model being prepared by tools/model_card.py) is not registered."""
    found = (read_card(f) for f in sorted(HERE.iterdir()) if (f / "card.json").is_file()
             and "sha256" in json.loads((f / "card.json").read_text()))
    return {c.name: c for c in found}


def card(name):
    """The card of `name`; `ModelError` listing the names for an unknown one."""
    known = cards()
    if not name:
        raise ModelError("a model name or file is required (`vxm-models list` names them)")
    if name not in known:
        raise ModelError(f"{name}: no such model file, and not a model name (known names: "
                         f"{', '.join(known)}; `vxm-models list` describes them)")
    return known[name]


def is_name(value):
    """Whether `value` is a registered model name."""
    return isinstance(value, str) and "/" not in value and value in cards()


def resolve(value):
    """The file path for a `--model`-like flag value: a registered name as its weights'
    path (a name wins over a file of that name in the working folder: write `./NAME` for
    the file), a fetched model's checked against the card's sha256 (`ModelError` when not
    fetched yet or damaged, naming the fetch command; `fetch` checks a shipped one); an
    existing path as it is; a path to a missing `.keras` / `.h5` file as it is (its reader
    names it); anything else a `ModelError`.
    Non-string values (a loaded model) pass through."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    value = str(value)
    if is_name(value):
        entry = card(value)
        again = (f"run `vxm-models fetch {value}` (downloads {entry.url}; --from=PATH takes "
                 "a local copy)")
        if not entry.available:
            if entry.shipped:
                raise ModelError(f"{value}: its weights {entry.path} are missing from the "
                                 "package; reinstall vxm_tf")
            raise ModelError(f"{value}: not fetched yet; {again}")
        if not entry.shipped and sha256(entry.path) != entry.sha256:
            raise ModelError(f"{value}: the cached {entry.path} is damaged (its sha256 "
                             f"differs from the card's); {again}")
        return str(entry.path)
    if os.path.exists(value) or not value:
        return value
    if value.endswith(MODEL_SUFFIXES) or os.sep in value:
        return value
    card(value)  # raises, listing the names
    return value


def name_of(value):
    """The registry name a flag value refers to (a name, or a file holding a registered
    model's weights: the same sha256), else None."""
    if is_name(value):
        return value
    try:
        path = Path(value).resolve()
        digest = sha256(path) if path.is_file() else None
    except (TypeError, OSError):
        return None
    for entry in cards().values():
        if entry.path.resolve() == path or entry.sha256 == digest:
            return entry.name
    return None


def fetch(name, source=None, progress=None):
    """Download (or copy, `source` a local path) model `name`'s weights into the cache,
    checked against its card's sha256; returns the cached path. A file whose checksum
    differs is deleted and `ModelError` raised: nothing is cached then. `progress(done,
    total)`: optional byte counter. Shipped models need no fetch: their path is returned
    once their sha256 is checked."""
    entry = card(name)
    if entry.shipped:  # nothing to fetch: the package's copy, checked
        path = Path(resolve(name))
        if sha256(path) != entry.sha256:
            raise ModelError(f"{name}: the package's {path} differs from its card's sha256 "
                             "(damaged or replaced); reinstall vxm_tf")
        return path
    if source is not None and not source:
        raise ModelError("--from is empty: give a file or an address")
    source = source or entry.url
    if not source:
        raise ModelError(f"{name}: no public address known; give --from=PATH")
    if "://" not in source and not os.path.isfile(source):
        what = "a folder, not a file" if os.path.isdir(source) else "no such file"
        raise ModelError(f"--from={source}: {what}")
    target = entry.path
    if target.is_dir():
        raise ModelError(f"{target}: a folder stands where the model file goes; remove it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    except OSError as err:
        raise ModelError(f"{target.parent}: cannot write the model cache "
                         f"({err.strerror or err}); set VXM_TF_HOME to a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as out:
            if "://" in source:
                _download(source, out, progress)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
        digest = sha256(tmp)
        if digest != entry.sha256:
            raise ModelError(f"{source}: sha256 {digest} is not {name}'s ({entry.sha256}); "
                             "nothing was cached")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # readable as any file the user creates
        os.replace(tmp, target)
    except OSError as err:
        raise ModelError(f"{target}: cannot write the model ({err.strerror or err}); "
                         "nothing was cached") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _download(url, out, progress=None):
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise ModelError(f"{url}: download failed ({reason}); fetch from a local copy with "
                         "--from=PATH") from None


from vxm_tf.models.card_text import card_markdown, describe  # noqa: E402,F401 - the registry's API
