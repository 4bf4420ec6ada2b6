"""One way to declare a flag: a dataclass field whose metadata holds its help (and its flag
name where it differs from the field's, and its choices). `define_flags_of(cls)` declares the
absl flags of a config class, `values_from_flags(cls, FLAGS)` reads them back; absl is the
only import, so the commands' configs (data, model, loss, training, tuning, instance
optimisation) all declare their flags the same way without importing TensorFlow.
"""

from dataclasses import MISSING, field, fields

from absl import flags


class ConfigError(ValueError):
    """Flags that are inconsistent; the message names them."""


def option(default, help, flag=None, choices=None):
    """A dataclass field that is also a flag (`flag`: its name when not the field's)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def flag_name(f):
    return f.metadata.get("flag") or f.name


def define_flags_of(cls, flag_values=None):
    """Declare one absl flag per field of `cls` that has a help text; the flag's type
    follows the default (bool, int, float, str, or a tuple of ints as a list flag)."""
    fv = {"flag_values": flags.FLAGS if flag_values is None else flag_values}
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        name, help_text, default = flag_name(f), f.metadata["help"], f.default
        assert default is not MISSING, f"{cls.__name__}.{f.name}: a flag needs a default"
        if f.metadata.get("choices"):
            flags.DEFINE_enum(name, default, f.metadata["choices"], help_text, **fv)
        elif isinstance(default, bool):
            flags.DEFINE_bool(name, default, help_text, **fv)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text, **fv)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text, **fv)
        elif isinstance(default, tuple):
            flags.DEFINE_list(name, [str(v) for v in default], help_text, **fv)
        else:
            flags.DEFINE_string(name, default, help_text, **fv)


def ints(values, name):
    """Comma-separated integers of the list flag `--name` as a tuple (empty entries
    dropped); `ConfigError` naming the flag otherwise."""
    try:
        return tuple(int(v) for v in values if str(v).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated integers, got "
                          f"{','.join(map(str, values))!r}") from None


def values_from_flags(cls, fl, **given):
    """`cls(...)` from the parsed flags of its flag fields (and `given` for the others)."""
    for f in fields(cls):
        if "help" in f.metadata:
            value = fl[flag_name(f)].value
            given[f.name] = ints(value, flag_name(f)) if isinstance(f.default, tuple) else value
    return cls(**given)


def flags_of(cls):
    """The flag names of `cls`'s fields that are flags, in field order."""
    return [flag_name(f) for f in fields(cls) if "help" in f.metadata]
