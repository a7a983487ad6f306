"""``python -m pystate``: a short tour of the store that proves it works."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import pystate
from pystate._codec import dumps


def _json(value) -> str:
    # Printed through pystate's own codec: the one place JSON is written.
    return dumps(value).decode()


def demo(path: str | None = None) -> int:
    """Write, update, list and read back on an in-memory store, then show
    that a file store (in ``path``, or a temporary directory) keeps its
    writes across close and reopen."""
    with pystate.State() as st:
        print(f"pystate {pystate.__version__} ({pystate.backend} backend), in-memory store")
        events: list[str] = []

        # A state trigger: runs after each write to "users", on the
        # dispatcher thread, unless the condition returns False.
        @st.on_change(scope="users", condition=lambda e: e["key"] == "ada")
        def on_user(event):
            events.append(f"{event['event_type']} {event['scope']}/{event['key']} -> {_json(event['new_value'])}")

        old = st.set("users", "ada", {"name": "Ada", "visits": 0, "tags": []})
        print(f"set users/ada            -> old value {_json(old)}")
        st.set("users", "grace", {"name": "Grace", "visits": 3, "tags": ["admiral"]})
        r = st.update(
            "users",
            "ada",
            [
                {"type": "increment", "path": "visits", "by": 1},
                {"type": "append", "path": "tags", "value": "math"},
                {"type": "increment", "path": "name", "by": 1},
            ],
        )
        print(f"update users/ada         -> {_json(r.new_value)}")
        for e in r.errors:
            print(f"  op {e['op_index']} skipped: {e['code']}: {e['message']}")
        print(f"list users               -> {_json(st.list('users'))}")
        print(f"list_groups              -> {_json(st.list_groups())}")
        value = st.trigger("state::get", {"scope": "users", "key": "ada"})
        print(f"trigger state::get       -> {_json(value)}")
        assert value == {"name": "Ada", "visits": 1, "tags": ["math"]}, value
        assert st.flush_events(timeout=30), "events did not finish"
        for line in events:
            print(f"trigger on users/ada     -> {line}")
        assert len(events) == 2, events
        print(f"stats                    -> {_json(st.stats())}")
    if path is not None:
        return _durable(path)
    with tempfile.TemporaryDirectory(prefix="pystate-demo-") as tmp:
        return _durable(os.path.join(tmp, "store"))


def _durable(path: str) -> int:
    with pystate.State(path) as st:
        print(f"file store at {path}")
        before = st.get("counters", "runs") or 0
        st.set("counters", "runs", before + 1)
        st.update("counters", "log", [{"type": "append", "path": "runs", "value": before + 1}])
        print(f"set counters/runs        -> {before + 1}")
    # A new State replays the logs: what was acknowledged is back.
    with pystate.State(path) as st:
        runs = st.get("counters", "runs")
        print(f"reopened, counters/runs  -> {runs}")
        assert runs == before + 1, runs
        s = st.stats()
        print(f"log bytes                -> {s['log_bytes']}, check -> {_json(st.check())}")
    return 0


DEFAULT_DATA_DIR = "pystate-data"


def serve(args: argparse.Namespace) -> int:
    """``pystate serve``: open the store, print where it listens, serve."""
    from pystate.errors import StateError
    from pystate.server import DEFAULT_HOST, DEFAULT_PORT, run, token_from_env

    try:
        if args.config is not None:
            st = pystate.State.from_config(args.config)
        else:
            st = pystate.State(args.data or DEFAULT_DATA_DIR)
    except StateError as e:
        print(f"pystate serve: {e}", file=sys.stderr)
        return 1
    what = f"{st.adapter} adapter"
    if st.adapter == "kv":
        what += f", file store at {st.path}" if st.path is not None else ", in memory"

    def ready(server) -> None:
        auth = ", bearer token required" if server._token else ""
        print(f"pystate serve: listening on ws://{server.host}:{server.port} ({what}{auth})", flush=True)

    try:
        run(
            st,
            host=args.host or DEFAULT_HOST,
            port=DEFAULT_PORT if args.port is None else args.port,
            token=args.token or token_from_env(),
            on_ready=ready,
        )
    except OSError as e:
        print(f"pystate serve: cannot listen: {e.strerror or e}", file=sys.stderr)
        return 1
    print("pystate serve: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pystate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="write, update, list and read back; then reopen a file store"
    )
    p.add_argument(
        "--path", help="directory of the file store part (default: a temporary one)"
    )
    p = sub.add_parser(
        "serve",
        help="serve a store to iii workers (iii-sdk) over the engine's WebSocket protocol",
        description="Serve a store over the iii worker protocol until SIGTERM or SIGINT; "
        "then stop accepting, finish in-flight calls, flush the store and exit 0.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help=f"file store directory (default: ./{DEFAULT_DATA_DIR})")
    where.add_argument("--config", metavar="FILE", help="an iii engine config file (iii-config.yaml)")
    p.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=None, help="port (default: 49134, the engine's; 0: any free one)")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: $III_TOKEN)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.path)
    if args.command == "serve":
        return serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
