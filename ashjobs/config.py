"""TOML → typed config. Every error names the file, the key and the problem.

Each section is a dataclass owned by the feature that uses it; `SECTIONS` maps a top-level TOML key to
that dataclass by import path, so a feature plugs its section in with one line and the loader imports
only the modules of sections that are present (the CLI must start fast).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NewType, get_args, get_origin

from ashjobs.errors import ConfigError, UsageError

# A duration in seconds, written in TOML as "500ms", "15s", "30m", "2h", "7d" (or compounds: "1h30m").
Duration = NewType("Duration", float)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """'1h30m' → 5400.0. Raises ValueError with the accepted forms."""
    s = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"bad duration {text!r} (use e.g. '500ms', '15s', '30m', '2h', '7d')")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/ashjobs")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ashjobs"


@dataclass
class NodeConfig:
    name: str = field(default_factory=socket.gethostname)
    roles: list[Literal["scheduler", "poller"]] = field(default_factory=lambda: ["scheduler", "poller"])
    data_dir: str = ""
    partition: str = "default"
    domains: list[str] = field(default_factory=list)
    capacity: int = 10
    grace_period: Duration = Duration(15.0)

    def validate(self) -> str | None:
        if not self.roles:
            return "roles: at least one of 'scheduler', 'poller'"
        if self.capacity < 1:
            return "capacity: must be >= 1"
        if not self.partition or self.partition != self.partition.strip():
            return f"partition: expected a non-empty name without surrounding spaces, got {self.partition!r}"
        if any(not d or d != d.strip() for d in self.domains):
            return "domains: expected non-empty names without surrounding spaces"
        return None


@dataclass
class StoreConfig:
    synchronous: Literal["full", "normal"] = "full"
    prune_after: Duration = Duration(7 * 86400.0)
    busy_timeout: Duration = Duration(5.0)


@dataclass
class AppConfig:
    modules: list[str] = field(default_factory=list)


@dataclass
class TaskOptions:
    """[tasks.NAME]: override a registered task's defaults without touching its code."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: Duration | None = None
    backoff_scale: float | None = None  # multiplies the default retry backoff (0.01 = 100x faster)

    def validate(self) -> str | None:
        if self.priority is not None and not 0 <= self.priority <= 9:
            return "priority: expected 0 (highest) .. 9"
        if self.max_attempts is not None and self.max_attempts < 1:
            return "max_attempts: expected >= 1"
        if self.backoff_scale is not None and self.backoff_scale < 0:
            return "backoff_scale: expected >= 0"
        return None


# Top-level TOML key → "module:Class". A feature adds its section here and nowhere else.
# `queues` is a plain table of queue name → concurrency limit, handled by `_queues`.
SECTIONS: dict[str, str] = {
    "node": "ashjobs.config:NodeConfig",
    "store": "ashjobs.config:StoreConfig",
    "app": "ashjobs.config:AppConfig",
    "cluster": "ashjobs.cluster.config:ClusterConfig",
    "notify": "ashjobs.notify:NotifyConfig",
    "metrics": "ashjobs.metrics:MetricsConfig",
    "apps": "ashjobs.apps.config:AppsConfig",
}
# Sections written as arrays of tables ([[cron]]): key → "module:Class" of one entry.
LIST_SECTIONS: dict[str, str] = {
    "cron": "ashjobs.cron:CronEntry",
    "trigger": "ashjobs.triggers:TriggerConfig",
    "poll": "ashjobs.poll:PollEntry",
}


@dataclass
class Config:
    path: Path | None
    sections: dict[str, Any]
    queues: dict[str, int]
    raw: dict[str, Any]
    tasks: dict[str, TaskOptions] = field(default_factory=dict)

    @property
    def node(self) -> NodeConfig:
        return typing.cast(NodeConfig, self.section("node"))

    @property
    def store(self) -> StoreConfig:
        return typing.cast(StoreConfig, self.section("store"))

    @property
    def app(self) -> AppConfig:
        return typing.cast(AppConfig, self.section("app"))

    @property
    def data_dir(self) -> Path:
        return Path(self.node.data_dir).expanduser()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ashjobs.db"

    def section(self, name: str) -> Any:
        """The typed section; absent sections get their defaults (loaded on first use)."""
        if name not in self.sections:
            if name in SECTIONS:
                self.sections[name] = _build(_resolve(SECTIONS[name]), {}, name, self._where())
            elif name in LIST_SECTIONS:
                self.sections[name] = []
            else:
                raise KeyError(name)
        return self.sections[name]

    def _where(self) -> str:
        return str(self.path) if self.path else "<defaults>"

    def as_dict(self) -> dict[str, Any]:
        """The effective config (defaults filled in) as TOML-shaped data, for `config check`."""
        out: dict[str, Any] = {}
        for name in [*SECTIONS, *LIST_SECTIONS]:
            if not _available({**SECTIONS, **LIST_SECTIONS}[name]):
                continue
            value = self.section(name)
            out[name] = [_dump(v) for v in value] if isinstance(value, list) else _dump(value)
        out["queues"] = dict(self.queues)
        out["tasks"] = {name: _dump(opts) for name, opts in self.tasks.items()}
        return out


def _resolve(ref: str) -> type:
    module, _, attr = ref.partition(":")
    return typing.cast(type, getattr(importlib.import_module(module), attr))


def _available(ref: str) -> bool:
    """A section whose module is not part of this copy is unknown rather than a crash."""
    try:
        return importlib.util.find_spec(ref.partition(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def _dump(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = typing.get_type_hints(type(obj))
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if hints.get(f.name) is Duration or (hints.get(f.name) == Duration | None and v is not None):
                v = format_duration(v)
            out[f.name] = _dump(v)
        return out
    if isinstance(obj, list):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    if tp is Duration:
        return "a duration string like '30s'"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}s"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    """Check `value` against the annotation `tp`; raise ConfigError naming file and key."""

    def bad(problem: str | None = None) -> ConfigError:
        return ConfigError(f"{where}: {key}: {problem or f'expected {_type_name(tp)}, got {value!r}'}")

    if tp is Any:
        return value
    if tp is Duration:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)  # bare numbers are seconds
        if not isinstance(value, str):
            raise bad()
        try:
            return parse_duration(value)
        except ValueError as e:
            raise bad(str(e)) from None
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        errors = []
        for opt in options:
            try:
                return _coerce(opt, value, key, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(options) == 1 else bad()
    if origin is Literal:
        if value not in get_args(tp):
            raise bad()
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        _, vt = get_args(tp)
        return {str(k): _coerce(vt, v, f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(typing.cast(type, tp), value, key, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp in (str, bool):
        if type(value) is not tp:
            raise bad()
        return value
    raise bad(f"unsupported type {tp!r}")


def _build(cls: type, table: dict[str, Any], key: str, where: str) -> Any:
    """Make a section dataclass from its TOML table; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in table.items():
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: {key}.{k}: unknown key (known keys: {known})")
        kwargs[k] = _coerce(hints[k], v, f"{key}.{k}", where)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{where}: {key}: missing required key {', '.join(missing) or e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        problem = validate()
        if problem:
            raise ConfigError(f"{where}: {key}.{problem}")
    return obj


# Queues the built-in apps use, with their limits; [queues] may change or add to them.
BUILTIN_QUEUES = {"default": 10, "alerts": 5, "notifications": 5, "onboarding": 2, "maintenance": 2}


def _queues(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: queues: expected a table of queue name = concurrency limit")
    out = {}
    for name, limit in value.items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"{where}: queues.{name}: expected a concurrency limit >= 1, got {limit!r}")
        out[name] = limit
    return {**BUILTIN_QUEUES, **out}


def find_config_path(explicit: str | None) -> Path | None:
    """--config, else $ASHJOBS_CONFIG, else ./ashjobs.toml, else /etc/ashjobs/ashjobs.toml, else none."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ASHJOBS_CONFIG")
    if env:
        return Path(env)
    for candidate in (Path("ashjobs.toml"), Path("/etc/ashjobs/ashjobs.toml")):
        if candidate.is_file():
            return candidate
    return None


def load(path: Path | str | None = None, *, data_dir: str | None = None, search: bool = True) -> Config:
    """Load and validate a config. `data_dir` (from --data-dir or $ASHJOBS_DATA_DIR) wins over the file."""
    import tomllib

    cfg_path = find_config_path(str(path) if path else None) if search else (Path(path) if path else None)
    raw: dict[str, Any] = {}
    where = str(cfg_path) if cfg_path else "<defaults>"
    if cfg_path is not None:
        try:
            raw = tomllib.loads(cfg_path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{cfg_path}: config file not found") from None
        except PermissionError:
            raise UsageError(f"{cfg_path}: config file not readable (permission denied)") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{cfg_path}: not valid TOML: {e}") from None
    return from_dict(raw, path=cfg_path, data_dir=data_dir, where=where)


def from_dict(raw: dict[str, Any], *, path: Path | None = None, data_dir: str | None = None,
              where: str = "<config>") -> Config:
    sections: dict[str, Any] = {}
    queues = dict(BUILTIN_QUEUES)
    task_options: dict[str, TaskOptions] = {}
    for key, value in raw.items():
        if key == "queues":
            queues = _queues(value, where)
        elif key == "tasks":
            task_options = _coerce(dict[str, TaskOptions], value, "tasks", where)
        elif key in SECTIONS and _available(SECTIONS[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key}: expected a table [{key}]")
            sections[key] = _build(_resolve(SECTIONS[key]), value, key, where)
        elif key in LIST_SECTIONS and _available(LIST_SECTIONS[key]):
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {key}: expected an array of tables [[{key}]]")
            cls = _resolve(LIST_SECTIONS[key])
            entries = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise ConfigError(f"{where}: {key}[{i}]: expected a table")
                label = f"{key}[{i}]" if "name" not in entry else f"{key}[{entry['name']!r}]"
                entries.append(_build(cls, entry, label, where))
            sections[key] = entries
        else:
            known = ", ".join(sorted([*(k for k, ref in {**SECTIONS, **LIST_SECTIONS}.items() if _available(ref)), "queues", "tasks"]))
            raise ConfigError(f"{where}: {key}: unknown section (known sections: {known})")
    cfg = Config(path=path, sections=sections, queues=queues, raw=raw, tasks=task_options)
    env_dir = data_dir or os.environ.get("ASHJOBS_DATA_DIR")
    if env_dir:
        cfg.node.data_dir = env_dir
    elif not cfg.node.data_dir:
        cfg.node.data_dir = str(default_data_dir())
    return cfg
