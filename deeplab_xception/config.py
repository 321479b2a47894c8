"""Configs as data: YAML files read into typed dataclasses, with `key.sub=value` overrides.

Every application declares its schema as (nested) dataclasses; this module is
the only place that reads YAML, applies overrides and rejects unknown keys.
The package ships its configs (`configs/` of the repository, installed as
`deeplab_xception.configs`), found by name from any folder, so an installed
wheel needs no clone.
"""

import dataclasses
import importlib.resources
import os
import pathlib
import typing

import yaml

from deeplab_xception.errors import UserError


def _set(tree, dotted, value, source):
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"{source}: {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _build(cls, data, where, source):
    if not isinstance(data, dict):
        raise UserError(f"{source}: {where or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    renamed = sorted(set(data) & set(getattr(cls, "RENAMED", {})))
    if renamed:
        raise UserError(f"{source}: config key '{prefix}{renamed[0]}' is now "
                        f"'{prefix}{cls.RENAMED[renamed[0]]}'")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise UserError(f"{source}: unknown config key '{key}' (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key, source)
        else:
            values[name] = _coerce(hint, value, key, source)
    return cls(**values)


def _coerce(hint, value, key, source):
    origin = typing.get_origin(hint)
    if value is None or hint is typing.Any:
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(hint)
        if args and args[-1] is not Ellipsis and len(value) != len(args):
            raise UserError(f"{source}: {key} must be a list of {len(args)} values, got {value!r}")
        items = args if args and args[-1] is not Ellipsis else [args[0] if args else typing.Any] * len(value)
        return tuple(_coerce(item, v, key, source) for item, v in zip(items, value))
    if origin is typing.Union:
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            return _coerce(arg, value, key, source)
    try:
        if hint is bool and isinstance(value, str):
            raise ValueError
        if hint is int and (isinstance(value, bool) or (isinstance(value, float)
                                                        and not value.is_integer())):
            raise ValueError
        return hint(value) if hint in (int, float, str, bool) else value
    except (TypeError, ValueError):
        raise UserError(f"{source}: {key} must be {hint.__name__}, got {value!r}") from None


SHIPPED = importlib.resources.files("deeplab_xception.configs")


def shipped_configs():
    """Names of the configs shipped with the package, sorted."""
    return sorted(entry.name for entry in SHIPPED.iterdir() if entry.name.endswith(".yaml"))


def find_config(path):
    """The file at `path` if there is one, else the shipped config of that name,
    given bare (`segment_voc.yaml`) or as the repository spelled it (`configs/segment_voc.yaml`)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return pathlib.Path(path)
    folder, name = os.path.split(path)
    if os.path.normpath(folder) in (".", "configs") and (SHIPPED / name).is_file():
        return SHIPPED / name
    raise UserError(f"{path}: no such config file, nor a shipped one "
                    f"(shipped: {', '.join(shipped_configs())})")


def load_config(cls, path=None, overrides=()):
    """`cls` filled from the YAML at `path` (a file or a shipped name, or defaults),
    then `key=value` overrides."""
    data, source = {}, "config"
    if path:
        found = find_config(path)
        source = str(found)
        try:
            data = yaml.safe_load(found.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{source}: not valid YAML ({e.__class__.__name__})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{source}: unreadable ({e.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise UserError(f"{source}: the top level must be a mapping of sections "
                            f"(model:, data:, trainer:, ...), got a {type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set(data, key.strip(), yaml.safe_load(raw), f"override {item!r}")
    config = _build(cls, data, "", source)
    _validate(config, source)
    return config


def _validate(config, source, where=""):
    """Runs every section's `validate()` (checks across its fields), outermost first;
    its messages start with a field name, which gets the section's path."""
    try:
        if hasattr(config, "validate"):
            config.validate()
    except UserError as e:
        raise UserError(f"{source}: {where}{e}") from None
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            _validate(value, source, f"{where}{field.name}.")
