"""The run folder: its lock, where a run starts, the configuration it records and the
check that a resumed run keeps it."""

import dataclasses
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from vxm_tf import configs, files
from vxm_tf.training import TrainingError


def versions():
    names = ("vxm_tf", "keras", "tensorflow", "numpy", "scipy", "nibabel", "absl-py")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def start_epoch(run_dir, resume):
    state_path = run_dir / "state.json"
    if resume:
        if not state_path.exists() or not (run_dir / "last.keras").exists():
            raise TrainingError(f"--resume: no checkpoint in {run_dir} (state.json and "
                                "last.keras); start a new run without --resume")
        state = json.loads(state_path.read_text())
        return state["epoch"], state.get("best_val_dice")
    if state_path.exists():
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or "
                            "choose another --model_dir")
    return 0, None


def truncate_history(path, epochs):
    """Keep the header and the rows of the first `epochs` epochs of history.csv: rows of
    an epoch that was logged but not checkpointed before an interruption go."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [row for row in lines[1:] if int(row.split(",")[0]) < epochs]
    if kept != lines:
        files.write_text(path, "".join(kept))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_dir(run_dir):
    """Take `run_dir/.lock` (holding this process's pid) or raise `TrainingError` when a
    live process holds it; a lock left by a dead process (kill -9) is taken over."""
    lock = Path(run_dir) / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise TrainingError(f"{run_dir} is in use by another training (pid {owner}); "
                                    "wait for it to finish or choose another --model_dir"
                                    ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return lock
    raise TrainingError(f"{lock}: cannot take the run directory's lock")


# settings a resumed run may change: how long and how verbosely it trains
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "resume"), ("train", "verbose"),
                     ("train", "model_dir"), ("train", "time_limit"), ("data", "cache_mb")}


def recorded(config):
    """`config` as config.json records it: plain JSON values, data paths absolute."""
    recorded = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    recorded["data"] = configs.absolute_paths(recorded["data"])
    return recorded


def check_resumed_config(run_dir, config):
    """Raise `TrainingError` naming every setting that differs from the run's config.json
    (other than `RESUMABLE_CHANGES`): a resumed run trains with its checkpoint's settings."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingError(f"--resume: {path} is unreadable ({err})") from None
    current = recorded(config)
    # a setting newer than the run's config.json had its default value then
    defaults = json.loads(json.dumps(dataclasses.asdict(type(config)()), default=str))
    # paths compare absolute (runs from before absolute paths hold them relative)
    saved["data"] = configs.absolute_paths(saved.get("data", {}))
    changes = []
    for section, values in current.items():
        if section == "model" and config.train.init_model:
            continue  # the architecture is the checkpoint's (`experiment.adopt_architecture`)
        for key, value in values.items():
            old = saved.get(section, {}).get(key, defaults[section][key])
            if (section, key) not in RESUMABLE_CHANGES and old != value:
                changes.append(f"{section}.{key} {old!r} -> {value!r}")
    if changes:
        raise TrainingError(f"--resume: settings differ from {path}: {'; '.join(changes)}; "
                            "resume with the run's settings (only --epochs may change) or "
                            "start a new run")
