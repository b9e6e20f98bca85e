"""Dataclass configuration: one base class that every reversalkit config derives from.

A config is a plain dataclass whose fields carry help text (`field(..., metadata={"help": ...})`,
or the `option()` shorthand) and which validates itself in `__post_init__`. This module derives
from that single definition everything else: YAML loading, `key=value` overrides from the CLI
(dotted keys reach nested configs), help listings, and the resolved dict saved beside results.

    cfg = StudyConfig.from_yaml("study.yaml").with_overrides(["iterations=3", "train.lr=1e-4"])
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C", bound="Config")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A dataclass field with help text; `factory` for mutable defaults."""
    meta = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and issubclass(tp, Config)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert YAML/CLI values to the annotated type where the conversion is unambiguous."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_config_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return tp.from_dict(value, _where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError):
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ValueError(f"{where}: expected {names}, got {value!r}")
    if origin is tuple or tp is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
            return tuple(_coerce(v, inner, where) if inner else v for v in value)
        raise ValueError(f"{where}: expected a list, got {value!r}")
    if origin is list or tp is list:
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else None
            return [_coerce(v, inner, where) if inner else v for v in value]
        raise ValueError(f"{where}: expected a list, got {value!r}")
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise ValueError(f"{where}: expected a mapping (e.g. {{key: value}}), got {value!r}")
    if tp in (int, float, str, bool):
        return _scalar(value, tp, where)
    return value


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) in (tuple, list) or tp in (tuple, list):
        return "a list"
    if typing.get_origin(tp) is dict or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _scalar(value: Any, tp: type, where: str) -> Any:
    """A YAML/CLI scalar as int, float, str or bool; anything that would change its meaning on
    the way (2.5 for an int, "abc" for a number, 1 for a bool) is an error naming the key."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{where}: expected a string, got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:  # YAML reads 3e-4 (no dot) as a string
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{where}: expected a number, got {value!r}")


@dataclasses.dataclass
class Config:
    """Base class: YAML/dict loading, overrides, and a resolved dict for saving."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, _where: str = "") -> C:
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(names))
        if unknown:
            prefix = f"{_where}." if _where else ""
            raise ValueError(
                f"unknown config key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        hints = _hints(cls)
        kwargs = {k: _coerce(v, hints[k], f"{_where}.{k}" if _where else k) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: the top level of a config file must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if dataclasses.is_dataclass(v):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            if isinstance(v, Path):
                return str(v)
            return v

        return conv(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: C, **changes: Any) -> C:
        return self.from_dict({**self.to_dict(), **changes})

    def with_overrides(self: C, overrides: list[str] | tuple[str, ...]) -> C:
        """Apply `key=value` strings (dotted keys for nested configs); values parse as YAML.

        Keys of nested configs must exist; inside a free-form mapping field (e.g. `task_options`)
        a dotted key may add a new entry: `task_options.train_size=400`.
        """
        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value (e.g. iterations=3)")
            key, raw = item.split("=", 1)
            node, leaf, free = _override_target(type(self), data, key.strip(), item)
            if not free and leaf not in node:
                raise ValueError(
                    f"override {item!r}: unknown key {key!r}; valid keys here: {', '.join(sorted(node))}")
            node[leaf] = load_yaml(raw, f"override {item!r}") if raw.strip() else ""
        return self.from_dict(data)

    @classmethod
    def add_arguments(cls, parser: Any, names: Sequence[str]) -> None:
        """`--name VALUE` command-line options for the fields `names` (dashes for underscores), with
        each field's help and default; `from_arguments` reads back the ones given, so a default is
        the dataclass's and nowhere else."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            f = fields[name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                                metavar=name.upper(),
                                help=f"{f.metadata.get('help', '')} (default {default!r})")

    @classmethod
    def from_arguments(cls: type[C], args: Any, names: Sequence[str]) -> C:
        """The config of the options `add_arguments` defined that were given; values parse as YAML."""
        given = {n: load_yaml(getattr(args, n), f"--{n.replace('_', '-')}")
                 for n in names if hasattr(args, n)}
        return cls.from_dict(given)

    def value_lines(self, prefix: str = "") -> list[str]:
        """`key = value  # help` lines of the values in force, nested configs expanded."""
        lines = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                lines += value.value_lines(prefix + f.name + ".")
                continue
            shown = list(value) if isinstance(value, tuple) else value
            lines.append(f"{prefix}{f.name} = {shown!r}  # {f.metadata.get('help', '')}")
        return lines

    @classmethod
    def help_lines(cls, prefix: str = "") -> list[str]:
        """`key (default): help` lines for every field, nested configs expanded."""
        lines = []
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if _is_config_type(hints[f.name]):
                lines += hints[f.name].help_lines(prefix + f.name + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            lines.append(f"{prefix}{f.name} (default {default!r}): {f.metadata.get('help', '')}")
        return lines


def _override_target(cls: type, data: dict, key: str, item: str) -> tuple[dict, str, bool]:
    """(mapping that holds the key's last part, that part, whether the mapping is free-form)."""
    parts = key.split(".")
    node, cursor = data, cls  # cursor: the Config class describing `node`, None inside a plain dict
    for part in parts[:-1]:
        if cursor is not None:
            hints = _hints(cursor)
            if part not in hints:
                raise ValueError(f"override {item!r}: unknown key {part!r}; valid keys here: "
                                 f"{', '.join(sorted(node))}")
            tp = hints[part]
            if _is_config_type(tp):
                cursor = tp
            elif _is_mapping_type(tp):
                cursor = None
                if node.get(part) is None:
                    node[part] = {}
            else:
                raise ValueError(f"override {item!r}: {part!r} is not a nested config or mapping")
        elif node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ValueError(f"override {item!r}: {part!r} holds {node[part]!r}, not a mapping")
        node = node[part]
    return node, parts[-1], cursor is None


def _is_mapping_type(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_mapping_type(a) for a in typing.get_args(tp) if a is not type(None))
    return tp is dict or typing.get_origin(tp) is dict


def load_yaml(text: str, where: str) -> Any:
    """yaml.safe_load with errors as one line naming the file (or override) and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}:{at}: invalid YAML: {problem}") from None


def check(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition holds; used by __post_init__ validators."""
    if not condition:
        raise ValueError(message)
