"""Reading the iii engine's config files: ``State.from_config(path)``.

Both forms the engine has used are read:

- the current one, a ``workers:`` list with an entry ``name: iii-state`` whose
  adapter is ``name: kv | redis | bridge``;
- the older one, a ``modules:`` list with an entry
  ``class: modules::state::StateModule`` whose adapter is
  ``class: modules::state::adapters::KvStore | RedisAdapter | Bridge``.

``${VAR}`` and ``${VAR:default}`` are replaced from the environment before
the YAML is parsed, as the engine does. Values are checked, and a bad one is
refused with the file, the key and what is allowed, where the engine would
silently fall back to a default (an out-of-range ``save_interval_ms`` or
``max_value_bytes``). An unknown key is refused too, as the engine refuses it
(its config structs deny unknown fields): a typo such as ``triggers_enabledd``
or a redis ``url`` for ``redis_url`` would otherwise leave a default in force
that the file seems to change.

>>> import pystate, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "iii-config.yaml")
>>> _ = open(path, "w").write('''
... workers:
...   - name: iii-state
...     config:
...       adapter:
...         name: kv
...         config: {store_method: in_memory}
... ''')
>>> with pystate.State.from_config(path) as st:
...     st.adapter
'kv'
"""

from __future__ import annotations

import os
import stat
import re
from typing import Any
from urllib.parse import urlparse

from pystate.errors import ConfigError

__all__ = ["ConfigWarning", "load_state_options", "expand_env"]

#: Where the engine keeps a file store when ``file_path`` is not given.
DEFAULT_FILE_PATH = "kv_store_data.db"

_STATE_NAMES = {"iii-state", "modules::state::StateModule"}
_ADAPTERS = {
    "kv": "kv",
    "redis": "redis",
    "bridge": "bridge",
    "modules::state::adapters::KvStore": "kv",
    "modules::state::adapters::RedisAdapter": "redis",
    "modules::state::adapters::Bridge": "bridge",
}
_STATE_KEYS = {"adapter", "triggers_enabled", "max_value_bytes", "save_interval_ms"}
_ADAPTER_KEYS = {
    "kv": {"store_method", "file_path", "save_interval_ms"},
    "redis": {"redis_url"},
    "bridge": {"bridge_url"},
}
_ENV = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")


class ConfigWarning(UserWarning):
    """Kept so that code importing it goes on working: an unknown key in a
    config file was once warned about with it and is now a ConfigError."""


def expand_env(text: str, where: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:default}`` from the environment."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is not None:
            return value
        if default is None:
            raise ConfigError(f"{where}: environment variable {name} is not set and ${{{name}}} has no default")
        return default

    return _ENV.sub(sub, text)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _refuse_unknown(d: dict[str, Any], known: set[str], where: str) -> None:
    for key in d:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key; allowed here: {', '.join(sorted(known))}")


def _interval(value: Any, where: str) -> int:
    if type(value) is not int or not 100 <= value <= 3_600_000:
        raise ConfigError(
            f"{where}: expected an integer from 100 to 3600000 (milliseconds), got {value!r} "
            "(the engine would silently use 5000; pystate refuses it)"
        )
    return value


def _entry_name(entry: dict[str, Any]) -> Any:
    return entry.get("name", entry.get("class"))


def load_state_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an iii config file and return the keyword arguments of
    ``pystate.State`` for its state worker (``adapter``, ``path`` or
    ``redis_url``, ``save_interval_ms``, ``triggers_enabled``,
    ``max_value_bytes``). A file without a state entry gives the engine's
    defaults: the kv adapter, in memory."""
    fname = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(fname).st_mode):  # a FIFO would hang the read
            raise ConfigError(f"{fname}: cannot read the config file: not a regular file")
        with open(fname, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{fname}: cannot read the config file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{fname}: not UTF-8 text (byte {e.start}): a config file is YAML") from None
    import yaml

    try:
        doc = yaml.safe_load(expand_env(text, fname))
    except yaml.YAMLError as e:
        raise ConfigError(f"{fname}: not valid YAML: {e}") from None
    doc = _mapping(doc, fname)
    entries: list[tuple[str, dict[str, Any]]] = []
    for section in ("workers", "modules"):
        items = doc.get(section) or []
        if not isinstance(items, list):
            raise ConfigError(f"{fname}: {section}: expected a list of entries, got {type(items).__name__}")
        for i, entry in enumerate(items):
            where = f"{fname}: {section}[{i}]"
            entry = _mapping(entry, where)
            if _entry_name(entry) in _STATE_NAMES:
                entries.append((where, entry))
    if len(entries) > 1:
        raise ConfigError(f"{fname}: {len(entries)} iii-state entries ({entries[0][0]}, {entries[1][0]}); expected one")
    if not entries:
        return {"adapter": "kv"}
    where, entry = entries[0]
    cfg = _mapping(entry.get("config"), f"{where}.config")
    where = f"{where}.config"
    _refuse_unknown(cfg, _STATE_KEYS, where)
    options: dict[str, Any] = {}

    if "triggers_enabled" in cfg:
        value = cfg["triggers_enabled"]
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.triggers_enabled: expected true or false, got {value!r}")
        options["triggers_enabled"] = value
    if cfg.get("max_value_bytes") is not None:
        value = cfg["max_value_bytes"]
        if type(value) is not int or value < 1:
            raise ConfigError(
                f"{where}.max_value_bytes: expected a positive integer (bytes), got {value!r} "
                "(the engine would silently drop the limit; pystate refuses it)"
            )
        options["max_value_bytes"] = value
    top_interval = None
    if cfg.get("save_interval_ms") is not None:
        top_interval = _interval(cfg["save_interval_ms"], f"{where}.save_interval_ms")

    adapter_entry = _mapping(cfg.get("adapter"), f"{where}.adapter")
    awhere = f"{where}.adapter"
    _refuse_unknown(adapter_entry, {"name", "class", "config"}, awhere)
    raw_name = _entry_name(adapter_entry) if adapter_entry else "kv"
    adapter = _ADAPTERS.get(raw_name) if isinstance(raw_name, str) else None
    if adapter is None:
        raise ConfigError(
            f"{awhere}.name: unknown adapter {raw_name!r}; expected one of kv, redis, bridge "
            "(or modules::state::adapters::KvStore, RedisAdapter, Bridge)"
        )
    acfg = _mapping(adapter_entry.get("config"), f"{awhere}.config")
    awhere = f"{awhere}.config"
    _refuse_unknown(acfg, _ADAPTER_KEYS[adapter], awhere)

    if adapter == "kv":
        method = acfg.get("store_method", "in_memory")
        if method not in ("in_memory", "file_based"):
            raise ConfigError(f"{awhere}.store_method: expected in_memory or file_based, got {method!r}")
        interval = top_interval
        if acfg.get("save_interval_ms") is not None:
            adapter_interval = _interval(acfg["save_interval_ms"], f"{awhere}.save_interval_ms")
            interval = interval if interval is not None else adapter_interval  # the state-level key wins
        if method == "file_based":
            file_path = acfg.get("file_path", DEFAULT_FILE_PATH)
            if not isinstance(file_path, str) or not file_path:
                raise ConfigError(f"{awhere}.file_path: expected a directory path, got {file_path!r}")
            options["path"] = file_path  # relative to the working directory, as in the engine
            if interval is not None:
                options["save_interval_ms"] = interval
        options["adapter"] = "kv"
        return options

    if adapter == "redis":
        url = acfg.get("redis_url", "redis://localhost:6379")
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.netloc or parsed.path):
            raise ConfigError(
                f"{awhere}.redis_url: expected redis://host:port[/db], rediss://... or unix://path, got {url!r}"
            )
        options.update(adapter="redis", redis_url=url)
        return options

    url = acfg.get("bridge_url", "ws://localhost:49134")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("ws", "wss") or not parsed.netloc:
        raise ConfigError(f"{awhere}.bridge_url: expected ws://host:port or wss://..., got {url!r}")
    options.update(adapter="bridge", bridge_url=url)
    return options
