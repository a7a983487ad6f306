"""State.from_config: the engine's config files, both forms, validation."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

import pystate
from pystate.config import load_state_options

NEW_FORM = """
workers:
  - name: iii-stream
    config: {port: 3112}
  - name: iii-state
    config:
      triggers_enabled: false
      max_value_bytes: 1000
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store
          save_interval_ms: 2000
"""

OLD_FORM = """
modules:
  - class: modules::state::StateModule
    config:
      adapter:
        class: modules::state::adapters::KvStore
        config:
          store_method: file_based
          file_path: ./data/state_store
          save_interval_ms: 2000
"""


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def write(text, name="iii-config.yaml"):
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


def test_new_form_gives_a_file_store_relative_to_the_working_directory(write, tmp_path):
    path = write(NEW_FORM)
    with pystate.State.from_config(path) as st:
        assert st.adapter == "kv"
        assert Path(st.path).resolve() == (tmp_path / "data" / "state_store").resolve()
        assert st.stats()["sync"] == "interval"
        assert st.triggers_enabled is False
        assert st.max_value_bytes == 1000
        st.set("s", "k", 1)
    with pystate.State.from_config(path) as st:  # durable: reopened from the same place
        assert st.get("s", "k") == 1


def test_old_form_is_read_the_same_way(write):
    opts = load_state_options(write(OLD_FORM))
    assert opts == {"adapter": "kv", "path": "./data/state_store", "save_interval_ms": 2000}


def test_in_memory_and_no_state_entry_give_the_engines_default(write):
    assert load_state_options(write("workers:\n  - name: iii-state\n")) == {"adapter": "kv"}
    assert load_state_options(write("workers: []\n")) == {"adapter": "kv"}
    with pystate.State.from_config(write("{}\n")) as st:
        assert st.path is None


def test_file_based_without_file_path_uses_the_engines_default_directory(write):
    opts = load_state_options(
        write("workers:\n  - name: iii-state\n    config:\n      adapter: {name: kv, config: {store_method: file_based}}\n")
    )
    assert opts["path"] == "kv_store_data.db"


def test_state_level_save_interval_overrides_the_adapters(write):
    text = NEW_FORM.replace("      max_value_bytes: 1000\n", "      max_value_bytes: 1000\n      save_interval_ms: 300\n")
    assert load_state_options(write(text))["save_interval_ms"] == 300


def test_environment_variables_are_expanded_with_defaults(write, monkeypatch):
    text = """
    workers:
      - name: iii-state
        config:
          adapter:
            name: kv
            config:
              store_method: ${METHOD:in_memory}
              file_path: ${STORE_DIR}
    """
    monkeypatch.setenv("STORE_DIR", "from-env")
    assert load_state_options(write(text)) == {"adapter": "kv"}
    monkeypatch.setenv("METHOD", "file_based")
    assert load_state_options(write(text))["path"] == "from-env"


def test_a_missing_environment_variable_without_default_is_named(write):
    with pytest.raises(pystate.ConfigError) as e:
        load_state_options(write("workers:\n  - name: iii-state\n    config: {max_value_bytes: ${PYSTATE_NOPE_X}}\n"))
    assert "PYSTATE_NOPE_X" in e.value.message


def test_redis_adapter_from_config(write, redis_server):
    redis_server.flush()
    for form in (
        f"workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n        config: {{redis_url: '{redis_server.url}'}}\n",
        f"modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n        class: modules::state::adapters::RedisAdapter\n        config: {{redis_url: '{redis_server.url}'}}\n",
    ):
        with pystate.State.from_config(write(form)) as st:
            assert st.adapter == "redis"
            st.set("s", "k", 1)
            assert st.get("s", "k") == 1


def test_overrides_take_precedence(write):
    with pystate.State.from_config(write(NEW_FORM), triggers_enabled=True) as st:
        assert st.triggers_enabled is True


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ("adapter: {name: mongo}", "adapter.name", "kv, redis, bridge"),
        ("adapter: {class: modules::state::adapters::Nope}", "adapter.name", "kv, redis, bridge"),
        ("adapter: {name: kv, config: {store_method: on_disk}}", "store_method", "in_memory or file_based"),
        ("adapter: {name: kv, config: {store_method: file_based, save_interval_ms: 99}}", "save_interval_ms", "100 to 3600000"),
        ("save_interval_ms: 3600001", "save_interval_ms", "100 to 3600000"),
        ("save_interval_ms: fast", "save_interval_ms", "100 to 3600000"),
        ("max_value_bytes: 0", "max_value_bytes", "positive integer"),
        ("triggers_enabled: maybe", "triggers_enabled", "true or false"),
        ("adapter: {name: redis, config: {redis_url: 'http://x:1'}}", "redis_url", "redis://host:port"),
        ("adapter: {name: bridge, config: {bridge_url: 'http://x'}}", "bridge_url", "ws://host:port"),
        ("adapter: [kv]", "adapter", "mapping"),
    ],
)
def test_bad_values_name_the_file_the_key_and_what_is_allowed(write, text, key, allowed):
    path = write(f"workers:\n  - name: iii-state\n    config:\n      {text}\n")
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State.from_config(path)
    msg = e.value.message
    assert str(path) in msg and key in msg and allowed in msg, msg


def test_bridge_adapter_takes_the_engines_bridge_url_key(write):
    opts = load_state_options(write(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n"
        "        config: {bridge_url: 'ws://10.0.0.5:49134'}\n"
    ))
    assert opts == {"adapter": "bridge", "bridge_url": "ws://10.0.0.5:49134"}


def test_old_form_bridge_class_defaults_to_the_engines_address(write):
    opts = load_state_options(write(
        "modules:\n  - class: modules::state::StateModule\n    config:\n"
        "      adapter: {class: modules::state::adapters::Bridge}\n"
    ))
    assert opts == {"adapter": "bridge", "bridge_url": "ws://localhost:49134"}


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ("triggers_enabledd: true", "config.triggers_enabledd", "adapter, max_value_bytes, save_interval_ms, triggers_enabled"),
        ("adapter: {name: kv, config: {bogus: 1}}", "adapter.config.bogus", "file_path, save_interval_ms, store_method"),
        ("adapter: {name: redis, config: {url: 'redis://localhost'}}", "adapter.config.url", "redis_url"),
        ("adapter: {name: bridge, config: {url: 'ws://localhost:1'}}", "adapter.config.url", "bridge_url"),
        ("adapter: {name: kv, options: {}}", "adapter.options", "class, config, name"),
    ],
)
def test_unknown_keys_are_refused_naming_the_file_the_key_and_the_keys_allowed(write, text, key, allowed):
    # The engine's config structs deny unknown fields; a typo silently kept a default.
    path = write(f"workers:\n  - name: iii-state\n    config:\n      {text}\n")
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State.from_config(path)
    msg = e.value.message
    assert str(path) in msg and key in msg and allowed in msg, msg


def test_an_unknown_key_in_the_old_form_is_refused_too(write):
    path = write(OLD_FORM.replace("save_interval_ms: 2000", "save_interval_ms: 2000\n          compression: zstd"))
    with pytest.raises(pystate.ConfigError) as e:
        load_state_options(path)
    assert "adapter.config.compression: unknown key" in e.value.message


def test_a_known_file_warns_about_nothing(write):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_state_options(write(NEW_FORM))


def test_unreadable_and_malformed_files_are_config_errors(write, tmp_path):
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State.from_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in e.value.message
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State.from_config(write("workers: [\n"))
    assert "not valid YAML" in e.value.message
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State.from_config(write("workers: {name: iii-state}\n"))
    assert "expected a list" in e.value.message


def test_two_state_entries_are_refused(write):
    with pytest.raises(pystate.ConfigError) as e:
        load_state_options(write("workers:\n  - name: iii-state\n  - name: iii-state\n"))
    assert "2 iii-state entries" in e.value.message


def test_the_shipped_example_config_loads(monkeypatch, tmp_path):
    example = Path(pystate.__file__).parent / "iii-config.example.yaml"
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pystate.State.from_config(example) as st:
            assert st.adapter == "kv"
            assert Path(st.path).resolve() == (tmp_path / "data" / "state_store").resolve()
    monkeypatch.setenv("STATE_STORE_METHOD", "in_memory")
    assert load_state_options(example) == {"adapter": "kv", "triggers_enabled": True}
