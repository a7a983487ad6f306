"""The ``pystate`` command line (also ``python -m pystate``).

Form: ``pystate COMMAND [--data DIR | --config FILE] [--json] [ARGS]``.
Values are JSON text in and out. Output is for people unless ``--json``
asks for one JSON document (the engine's response shapes) for scripts.

Exit codes (README.md, "Command line", has the same table):

* 0 - done;
* 1 - not found: ``get`` or ``delete`` of a key that is not there,
  ``compact`` of a scope that is not there (``not found`` on stderr); or
  ``check`` found something to fix;
* 2 - a bad command line or bad input (invalid JSON, an integer beyond 64
  bits, malformed ops); nothing is written;
* 3 - the store cannot be opened or used (locked, damaged, unreachable,
  a bad config file, a config whose store is in memory);
* 4 - ``update``: every op failed (each is named on stderr);
* 130 - interrupted (Ctrl-C); ``load`` has taken back what it wrote.

Errors and warnings are one line each on stderr, never a traceback.

>>> import subprocess, sys, tempfile              # doctest: +SKIP
>>> d = tempfile.mkdtemp()                        # doctest: +SKIP
>>> subprocess.run([sys.executable, "-m", "pystate", "set", "--data", d, "users", "u1", '{"n": 1}'])  # doctest: +SKIP
>>> subprocess.run([sys.executable, "-m", "pystate", "get", "--data", d, "users", "u1"])  # doctest: +SKIP
{"n":1}
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import warnings
from types import FrameType, TracebackType
from typing import Any, Callable, Iterator, NoReturn

import pystate
from pystate._backend import codec as _codec
from pystate.errors import CorruptError, InvalidValueError, PayloadError, StateError, ValueTooLargeError

dumps = _codec.dumps
# JSON text from outside (a VALUE, OPS, a dump line) is read by the API's
# rules: an integer beyond 64 bits, NaN or an infinity is refused, never
# turned into a float.
loads_text = _codec.loads_text

__all__ = ["main", "DEFAULT_DATA_DIR", "EXIT_OK", "EXIT_NOT_FOUND", "EXIT_USAGE", "EXIT_STORE",
           "EXIT_NO_OP_APPLIED", "EXIT_INTERRUPTED"]

#: The store the commands use when neither --data nor --config is given.
DEFAULT_DATA_DIR = "pystate-data"
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_STORE, EXIT_NO_OP_APPLIED = 0, 1, 2, 3, 4
#: 128 + SIGINT, as a shell reports a program Ctrl-C stopped.
EXIT_INTERRUPTED = 130
_MISSING = object()


class _Fail(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _text(value: Any) -> str:
    return dumps(value).decode()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _json_text(text: str | bytes, what: str) -> Any:
    """`text` decoded by loads_text; a failure is a usage error naming `what`."""
    try:
        return loads_text(text)
    except InvalidValueError as e:  # valid JSON, but not a value pystate stores
        raise _Fail(f"{what}: {e}", EXIT_USAGE) from None
    except ValueError as e:
        raise _Fail(f"{what} is not valid JSON: {e}", EXIT_USAGE) from None


def _open(args: argparse.Namespace, *, access: str) -> pystate.State:
    """The store the command line names, opened for `access`: "read" (a
    file store is opened read-only: nothing on disk is created or changed,
    damage is reported and left), "write" (an existing store), "create"
    (a store is made if there is none) or "serve" (as "create", and an
    in-memory store is allowed: it lives as long as the server)."""
    try:
        if args.config is not None:
            from pystate.config import load_state_options

            options = load_state_options(args.config)
            if options.get("adapter", "kv") == "kv":
                if options.get("path") is None and access != "serve":
                    raise _Fail(_in_memory_refusal(args, access), EXIT_STORE)
                if access == "read":
                    options["read_only"] = True
            return pystate.State(**options)
        path = args.data or DEFAULT_DATA_DIR
        if access not in ("create", "serve") and not os.path.isdir(path):
            raise _Fail(f"no store at {path} (give --data DIR or --config FILE)", EXIT_STORE)
        return pystate.State(path, read_only=access == "read")
    except CorruptError:
        raise  # main() adds how to fix it
    except StateError as e:
        raise _Fail(str(e), EXIT_STORE) from None


def _in_memory_refusal(args: argparse.Namespace, access: str) -> str:
    # A command is one process: an in-memory store starts empty and is gone
    # when it exits, so a write would be lost and a read would see nothing,
    # both while exiting 0. (serve is the exception: it is one long process.)
    outcome = "would see an empty store" if access == "read" else "would be lost on exit"
    return (f"{args.config} describes an in-memory kv store (store_method: in_memory, which is also the "
            f"default without an iii-state entry or a store_method): nothing persists between commands, so "
            f"`{args.command}` {outcome}; use a config with store_method: file_based, or --data DIR")


# ---- the commands ------------------------------------------------------------------


def _not_found(what: str) -> _Fail:
    return _Fail(f"not found: {what}", EXIT_NOT_FOUND)


def _cmd_get(st: pystate.State, args: argparse.Namespace) -> int:
    value = st.get(args.scope, args.key, _MISSING)
    if value is _MISSING:
        raise _not_found(f"{args.scope}/{args.key}")
    _out(_text(value))
    return EXIT_OK


def _cmd_set(st: pystate.State, args: argparse.Namespace) -> int:
    value = _json_text(args.value, "VALUE")
    old = st.set(args.scope, args.key, value)
    if args.json:
        _out(_text({"old_value": old, "new_value": value}))
    return EXIT_OK


def _cmd_delete(st: pystate.State, args: argparse.Namespace) -> int:
    # Asked first: delete() gives None both for a missing key and for a
    # stored null. (A file store is this process's alone while it is open.)
    if st.get(args.scope, args.key, _MISSING) is _MISSING:
        raise _not_found(f"{args.scope}/{args.key}")
    old = st.delete(args.scope, args.key)
    if args.json:
        _out(_text(old))
    return EXIT_OK


def _cmd_update(st: pystate.State, args: argparse.Namespace) -> int:
    ops = _json_text(args.ops, "OPS")
    r = st.update(args.scope, args.key, ops)
    if args.json:
        _out(_text(r.to_response()))
    else:
        _out(_text(r.new_value))
        for e in r.errors:
            print(f"op {e['op_index']} skipped: {e['code']}: {e['message']}", file=sys.stderr)
    if ops and len(r.errors) == len(ops):
        # The result was stored all the same (a missing key became {}), as
        # the engine does; what a script needs to know is that no op took.
        raise _Fail(f"no op applied: all {len(ops)} failed", EXIT_NO_OP_APPLIED)
    return EXIT_OK


def _cmd_list(st: pystate.State, args: argparse.Namespace) -> int:
    values = st.list(args.scope)
    if args.json:
        _out(_text(values))
    else:
        for v in values:
            _out(_text(v))
    return EXIT_OK


def _cmd_keys(st: pystate.State, args: argparse.Namespace) -> int:
    keys = st.keys(args.scope)
    if args.json:
        _out(_text(keys))
    else:
        for k in keys:
            _out(k)
    return EXIT_OK


def _cmd_groups(st: pystate.State, args: argparse.Namespace) -> int:
    groups = st.list_groups()
    if args.json:
        _out(_text({"groups": groups}))
    else:
        for g in groups:
            _out(g)
    return EXIT_OK


def _cmd_stats(st: pystate.State, args: argparse.Namespace) -> int:
    s = st.stats()
    if args.json:
        _out(_text(s))
    else:
        for name, value in s.items():
            _out(f"{name}: {_text(value) if isinstance(value, (dict, list)) else value}")
    return EXIT_OK


def _cmd_compact(st: pystate.State, args: argparse.Namespace) -> int:
    groups = st.list_groups()
    if args.scope is not None and args.scope not in groups:
        raise _not_found(f"scope {args.scope}")
    before = st.stats().get("log_bytes")
    scopes = [args.scope] if args.scope is not None else groups
    progress = _Progress("compact, scopes")
    for i, scope in enumerate(scopes, 1):  # scope by scope, to show progress
        st.compact(scope)
        progress.update(i, 0)
    progress.update(len(scopes), 0, final=True)
    after = st.stats().get("log_bytes")
    if args.json:
        _out(_text({"log_bytes_before": before, "log_bytes_after": after}))
    elif before is None:
        _out("nothing to compact: this store keeps no logs")
    else:
        _out(f"compacted: logs {before:,} -> {after:,} bytes")
    return EXIT_OK


class _Progress:
    """A one-line progress report on stderr, only when it is a terminal."""

    def __init__(self, what: str, total_bytes: int | None = None) -> None:
        self.what, self.total = what, total_bytes
        self.on = sys.stderr.isatty()
        self.last = 0.0

    def update(self, records: int, done_bytes: int, final: bool = False) -> None:
        if not self.on:
            return
        import time

        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        size = f"{done_bytes / 2**20:,.1f} MiB" if done_bytes or self.total else ""
        if self.total:
            size += f" of {self.total / 2**20:,.1f} MiB ({100 * done_bytes / self.total:.0f}%)"
        sys.stderr.write(f"\r{self.what}: {records:,} done" + (f", {size}" if size else "") + ("\n" if final else ""))
        sys.stderr.flush()


def _output_file(path: str) -> tuple[Any, str]:
    """A new temporary file beside `path`, created exclusively under a
    fresh name (no file of anyone else's is ever written or removed), that
    replaces `path` once complete; `path` itself must be a regular file
    or not exist."""
    import stat
    import tempfile

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise _Fail(f"cannot write {path}: {e.strerror or e}", EXIT_USAGE) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise _Fail(f"cannot write {path}: it exists and is not a regular file (a directory, a link, a "
                    "device?); give a new file name, or - for stdout", EXIT_USAGE)
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
    except OSError as e:
        raise _Fail(f"cannot write {path}: {e.strerror or e}", EXIT_USAGE) from None
    return os.fdopen(fd, "wb"), tmp


def _cmd_dump(st: pystate.State, args: argparse.Namespace) -> int:
    if args.output in (None, "-"):
        f, tmp = sys.stdout.buffer, None
    else:
        f, tmp = _output_file(args.output)
    progress = _Progress("dump, records")
    records = written = 0
    try:
        for scope in st.list_groups():
            head = b'{"scope":' + dumps(scope) + b',"key":'
            pos = 0
            while True:
                # Raw JSON values straight from the store: nothing decoded.
                pairs, pos = st.items_page(scope, pos, 1000)
                if not pairs:
                    break
                for key, raw in pairs:
                    line = head + dumps(key) + b',"value":' + raw + b"}\n"
                    f.write(line)
                    written += len(line)
                records += len(pairs)
                progress.update(records, written)
        f.flush()
        if tmp is not None:
            os.fsync(f.fileno())
    except BaseException as e:
        if tmp is not None:
            f.close()
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, BrokenPipeError):
            raise _Fail(f"cannot write {args.output or 'stdout'}: {e.strerror or e}", EXIT_STORE) from None
        raise
    if tmp is not None:
        f.close()
        os.replace(tmp, args.output)  # a failed dump never leaves a half file under the name
    progress.update(records, written, final=True)
    if args.json:
        print(_text({"records": records, "bytes": written}), file=sys.stderr)
    return EXIT_OK


def _records(f: Any, what: str) -> Any:
    """(line number, scope, key, value) of each line of a dump; bad lines
    raise, naming the line."""
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        rec = _json_text(line, f"{what} line {n}")
        if not isinstance(rec, dict) or not isinstance(rec.get("scope"), str) or \
                not isinstance(rec.get("key"), str) or "value" not in rec:
            raise _Fail(f'{what} line {n}: expected {{"scope": str, "key": str, "value": ...}}', EXIT_USAGE)
        yield n, rec["scope"], rec["key"], rec["value"]


def _cmd_load(st: pystate.State, args: argparse.Namespace) -> int:
    """Every record of the input, or none: a bad line anywhere is found
    before anything is written, and a failure or Ctrl-C while writing takes
    back what was written (see _set_all)."""
    import shutil
    import tempfile

    try:
        spool = None
        if args.input == "-":
            # Checked in full before anything is written, so stdin is kept
            # (on disk, not in memory) for the second pass.
            spool = tempfile.TemporaryFile()
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.seek(0)
            what = "stdin"
        else:
            what = args.input
        try:
            f = spool if spool is not None else open(args.input, "rb")  # noqa: SIM115
        except OSError as e:
            raise _Fail(f"cannot read {args.input}: {e.strerror or e}", EXIT_USAGE) from None
        with f:
            total = os.fstat(f.fileno()).st_size
            for _record in _records(f, what):
                pass  # first pass: a bad line anywhere means nothing is written
            f.seek(0)
            done = _set_all(st, _records(f, what), _Progress("load, records", total), f)
    except KeyboardInterrupt:  # before _set_all wrote anything (it holds Ctrl-C back while it writes)
        raise _Fail("interrupted while reading the input: nothing was loaded", EXIT_INTERRUPTED) from None
    if args.json:
        _out(_text({"records": done}))
    else:
        _out(f"loaded {done:,} records")
    return EXIT_OK


class _HeldInterrupt:
    """Ctrl-C noted, not raised, while it is held: a KeyboardInterrupt
    could land between a write and the note of it, which would then never
    be taken back. The holder asks `seen` at points where it can stop."""

    def __init__(self) -> None:
        self.seen = False
        self._was: Any = None

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True

    def __enter__(self) -> _HeldInterrupt:
        # Only Python's own handler is replaced: an ignored SIGINT (a job
        # started with nohup) stays ignored. Off the main thread no Ctrl-C
        # arrives, and signal() may not be called.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._was = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._was is not None:
            signal.signal(signal.SIGINT, self._was)


def _set_all(st: pystate.State, records: Iterator[tuple[int, str, str, Any]], progress: _Progress, f: Any) -> int:
    """Set every record, or none of them: a write that fails, or a Ctrl-C
    before the last write is flushed, undoes the writes made so far (from a
    journal of each key's value before, kept in memory: the store keeps its
    values in memory anyway) and raises. Another process could only see the
    records come and go on a store shared live (redis, bridge); a file
    store is this process's alone while it is open. Returns the count."""
    journal: list[tuple[str, str, Any]] = []
    with _HeldInterrupt() as ctrl_c:
        try:
            for _n, scope, key, value in records:
                if ctrl_c.seen:
                    break
                old = st.get(scope, key, _MISSING)
                st.set(scope, key, value)
                journal.append((scope, key, old))
                if len(journal) % 1000 == 0:
                    progress.update(len(journal), f.tell())
            if not ctrl_c.seen:
                st.flush()
        except BaseException as e:
            _undo(st, journal, f"failed after {len(journal):,} records ({e})")
            raise
        if ctrl_c.seen:
            _undo(st, journal, f"interrupted after {len(journal):,} records")
            raise _Fail(f"interrupted: nothing was loaded ({_plural(len(journal), 'record')} written, all taken "
                        "back)", EXIT_INTERRUPTED)
    progress.update(len(journal), os.fstat(f.fileno()).st_size, final=True)
    return len(journal)


def _undo(st: pystate.State, journal: list[tuple[str, str, Any]], why: str) -> None:
    """Put back, newest first, what `journal` says each key held."""
    undone = 0
    try:
        for scope, key, old in reversed(journal):
            if old is _MISSING:
                st.delete(scope, key)
            else:
                st.set(scope, key, old)
            undone += 1
        st.flush()
    except (StateError, OSError) as e:
        left = len(journal) - undone
        raise _Fail(f"{why}; then taking them back failed with {_plural(left, 'record')} still in: {e}",
                    EXIT_STORE) from None


def _store_dir(args: argparse.Namespace) -> str:
    """The file store directory the command line names (check works on
    the files, so it needs one)."""
    if args.config is not None:
        from pystate.config import load_state_options

        try:
            options = load_state_options(args.config)
        except StateError as e:
            raise _Fail(str(e), EXIT_STORE) from None
        if options.get("adapter") != "kv" or options.get("path") is None:
            raise _Fail(f"{args.config} describes no file store: check reads a kv file_based store's logs", EXIT_STORE)
        path = str(options["path"])
    else:
        path = args.data or DEFAULT_DATA_DIR
    if not os.path.isdir(path):
        raise _Fail(f"no store at {path} (give --data DIR or --config FILE)", EXIT_STORE)
    return path


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _check(args: argparse.Namespace) -> int:
    from pystate._backend import core as _core

    path = _store_dir(args)
    if args.fix:
        return _check_fix(path, args)
    try:
        r = _core.inspect(path)
    except StateError as e:
        raise _Fail(str(e), EXIT_STORE) from None
    if args.json:
        _out(_text(r))
        return EXIT_OK if r["ok"] else EXIT_NOT_FOUND
    if r["problem"]:
        _out(f"damaged: {r['problem']}")
        _out("`pystate check --fix` salvages every valid record and keeps the damaged file beside the "
             "store as <file>.corrupt-<n>")
    if r["torn_tails"]:
        _out(f"torn tail in {_plural(r['torn_tails'], 'log')}: {_plural(r['bytes_cut'], 'byte')} of records "
             "at the end are damaged or gone (a crash cut a write short, or the disk lost records the log "
             "says it held): `pystate check --fix` cuts it")
    if r["stray_files"]:
        _out(f"{_plural(r['stray_files'], 'leftover file')} of an interrupted log write: "
             "`pystate check --fix` removes them")
    if r["detail"] and not r["problem"]:
        _out(f"first: {r['detail']}")
    if r["ok"]:
        _out(f"ok: {_plural(r['logs'], 'log')}, {_plural(r['records'], 'record')}")
    return EXIT_OK if r["ok"] else EXIT_NOT_FOUND


def _check_fix(path: str, args: argparse.Namespace) -> int:
    import warnings

    from pystate.errors import RecoveryWarning

    progress = _Progress("check --fix, records")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecoveryWarning)  # reported below, in full
            st = pystate.State(path, repair=True)
    except StateError as e:
        raise _Fail(str(e), EXIT_STORE) from None
    try:
        rec = st.stats()["recovery"]
        verdict = st.check()
    finally:
        st.close()
    progress.update(rec["records"], 0, final=True)
    if args.json:
        _out(_text({"fixed": rec, "check": verdict}))
        return EXIT_OK if verdict["ok"] else EXIT_STORE
    from pystate.errors import recovery_findings

    done = recovery_findings(rec)
    if rec["repaired"]:
        done.append("the damaged files are kept beside the store as <file>.corrupt-<n>")
    if rec["stray_files"]:
        done.append(f"removed {_plural(rec['stray_files'], 'leftover file')} of an interrupted log write")
    _out("fixed: " + "; ".join(done) if done else "nothing to fix")
    if not verdict["ok"]:
        raise _Fail(f"still damaged after the fix: {verdict['problem']}", EXIT_STORE)
    _out(f"ok: {_plural(verdict['logs'], 'log')}, {_plural(verdict['records'], 'record')}")
    return EXIT_OK


# (handler, access: "read" changes nothing on disk, "write" needs a store,
# "create" makes one if missing)
_DATA_COMMANDS: dict[str, tuple[Callable[[pystate.State, argparse.Namespace], int], str]] = {
    "get": (_cmd_get, "read"),
    "set": (_cmd_set, "create"),
    "delete": (_cmd_delete, "write"),
    "update": (_cmd_update, "create"),
    "list": (_cmd_list, "read"),
    "keys": (_cmd_keys, "read"),
    "groups": (_cmd_groups, "read"),
    "stats": (_cmd_stats, "read"),
    "compact": (_cmd_compact, "write"),
    "dump": (_cmd_dump, "read"),
    "load": (_cmd_load, "create"),
}


def _serve(args: argparse.Namespace) -> int:
    from pystate.server import DEFAULT_HOST, DEFAULT_PORT, run, token_from_env

    st = _open(args, access="serve")
    what = f"{st.adapter} adapter"
    if st.path is not None:
        what += f", file store at {st.path}"
    elif st.storage.local:
        what += ", in memory"

    def ready(server: Any) -> None:
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
        raise _Fail(f"cannot listen: {e.strerror or e}", EXIT_STORE) from None
    print("pystate serve: stopped", flush=True)
    return EXIT_OK


def _bench(bench_args: list[str]) -> int:
    # The runner is part of the installed package (pystate/bench/); the
    # alternatives it measures come with the bench extra, and one that is
    # missing is skipped with a line saying how to install it.
    from pystate.bench import main as bench_main

    return bench_main(bench_args, prog="pystate bench")


class _BenchHelp(argparse.Action):
    """`pystate bench --help`: the help of the benchmark's own options."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        from pystate.bench import parser as bench_parser

        bench_parser("pystate bench").print_help()
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in the form of every other error: one line
    (argparse prints its usage block first), exit 2. Subcommand parsers
    are of this class too (add_subparsers makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {_one_line(message)}; see `{self.prog} --help` for usage\n")


def _port(text: str) -> int:
    # Checked here: a port out of range reaches socket.bind as OverflowError.
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535 (0: any free one), got {text!r}")
    return port


def _given(what: str) -> Callable[[str], str]:
    """An argparse type refusing the empty string, which the commands would
    otherwise take as "not given" (--data '' would open ./pystate-data,
    --token '' would fall back to $III_TOKEN)."""

    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"expected {what}, got an empty string")
        return text

    return check


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pystate",
        description="pystate: a durable JSON state store with the iii engine's state API.",
        epilog="exit codes: 0 done, 1 not found (get, delete, compact SCOPE) or damage found (check), "
        "2 bad command line or input, 3 store unavailable, 4 no op of an update applied, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"pystate {pystate.__version__}")
    # The store options are the commands' own (`pystate get --data DIR ...`);
    # given before the command they are taken too (see _hoisted).
    before = parser.add_mutually_exclusive_group()
    before.add_argument("--data", dest="data_before", metavar="DIR", type=_given("a directory"),
                        help="as the command's --data")
    before.add_argument("--config", dest="config_before", metavar="FILE", type=_given("a file"),
                        help="as the command's --config")
    parser.add_argument("--json", dest="json_before", action="store_true", help="as the command's --json")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store = _Parser(add_help=False)
    where = store.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", type=_given("a directory"),
                       help=f"file store directory (default: ./{DEFAULT_DATA_DIR})")
    where.add_argument("--config", metavar="FILE", type=_given("a file"),
                       help="an iii engine config file (iii-config.yaml)")
    store.add_argument("--json", action="store_true", help="print one JSON document, for scripts")

    def add(name: str, help: str, *positionals: tuple[str, str]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[store], help=help, description=help)
        for arg, arg_help in positionals:
            if arg.endswith("?"):
                p.add_argument(arg[:-1], nargs="?", default=None, help=arg_help)
            else:
                p.add_argument(arg, help=arg_help)
        return p

    scope, key = ("scope", "scope name"), ("key", "key name")
    add("get", "print the value at SCOPE KEY as JSON", scope, key)
    add("set", "store VALUE (JSON text) at SCOPE KEY", scope, key, ("value", "the value, as JSON text"))
    add("delete", "remove SCOPE KEY", scope, key)
    add("update", "apply OPS (a JSON list of update ops) to SCOPE KEY, atomically", scope, key,
        ("ops", 'e.g. \'[{"type": "increment", "path": "n", "by": 1}]\''))
    add("list", "print every value of SCOPE (one JSON value per line)", scope)
    add("keys", "print the keys of SCOPE, one per line, in the order list gives the values", scope)
    add("groups", "print the scope names, sorted")
    add("stats", "print the store's counters")
    add("compact", "rewrite the logs (of SCOPE, or of all scopes) to hold only live records",
        ("scope?", "one scope (default: all)"))

    p = add("check", "verify every log; changes nothing unless --fix")
    p.add_argument("--fix", action="store_true",
                   help="cut torn tails and salvage damaged logs (the damaged file is kept), saying what it did")
    p = add("dump", "write every record as JSON lines {scope, key, value}, streaming")
    p.add_argument("-o", "--output", default=None, type=_given("a file, or -"), help="a file (default: stdout)")
    add("load", "set every record of a dump (checked in full first: a bad line writes nothing)",
        ("input", "a dump file, or - for stdin"))

    p = sub.add_parser(
        "bench", add_help=False,
        help="compare pystate with the alternatives (those of the bench extra that are installed)",
    )
    p.add_argument("-h", "--help", action=_BenchHelp, help="show the benchmark's options and exit")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's options")

    p = sub.add_parser("demo", help="write, update, list and read back; then reopen a file store")
    p.add_argument("--path", type=_given("a directory"),
                   help="directory of the file store part (default: a temporary one)")

    p = sub.add_parser(
        "serve", parents=[store],
        help="serve a store to iii workers (iii-sdk) over the engine's WebSocket protocol",
        description="Serve a store over the iii worker protocol until SIGTERM or SIGINT; "
        "then stop accepting, finish in-flight calls, flush the store and exit 0.",
    )
    p.add_argument("--host", default=None, type=_given("an address (0.0.0.0: every interface)"),
                   help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=_port, default=None, help="port (default: 49134, the engine's; 0: any free one)")
    p.add_argument("--token", default=None, type=_given("a token"),
                   help="require 'Authorization: Bearer TOKEN' (default: $III_TOKEN)")
    return parser


def _one_line(text: str) -> str:
    # Some messages carry line breaks (a YAML error shows the line it is
    # about); stderr gets one line per error or warning.
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _failure(e: _Fail | StateError | KeyboardInterrupt, args: argparse.Namespace | None) -> tuple[str, int]:
    """The one line and the exit code for an exception that ends a command:
    the one place that decides them. (Any other exception is a bug, and
    keeps its traceback.)"""
    if isinstance(e, _Fail):
        return str(e), e.code
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(e, (PayloadError, InvalidValueError, ValueTooLargeError)):  # the input, not the store
        return str(e), EXIT_USAGE
    if isinstance(e, CorruptError):
        return f"{e}; run `{_check_fix_command(args)}` to salvage every valid record (it keeps the damaged file)", \
            EXIT_STORE
    return str(e), EXIT_STORE


def _check_fix_command(args: argparse.Namespace | None) -> str:
    """`pystate check --fix` for the store `args` names."""
    where = []
    if args is not None and getattr(args, "config", None) is not None:
        where = ["--config", args.config]
    elif args is not None and getattr(args, "data", None) is not None:
        where = ["--data", args.data]
    return shlex.join(["pystate", "check", *where, "--fix"])


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    command, args = (argv[:1] or ["pystate"])[0], None

    def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
        # Python's form is two lines, the second a line of pystate's source:
        # a user of the command line needs the message (RecoveryWarning,
        # ConfigWarning), once, on one line.
        text = str(message).removeprefix("pystate: ")
        print(f"pystate {command}: warning: {_one_line(text)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = warning_line
        try:
            if argv[:1] == ["bench"] and not set(argv[1:]) & {"-h", "--help"}:
                # Every argument after `bench` belongs to python -m bench.
                return _bench(argv[1:])
            parser = _parser()
            args = _hoisted(parser, parser.parse_args(argv))
            command = args.command
            return _run(args)
        except BrokenPipeError:  # `pystate list s | head`
            return EXIT_OK
        except (_Fail, StateError, KeyboardInterrupt) as e:
            message, code = _failure(e, args)
            print(f"pystate {command}: {_one_line(message)}", file=sys.stderr)
            return code


def _hoisted(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the store options given before the command moved to
    where the command reads them; refused (exit 2) where the command takes
    none, or where it was given on both sides."""
    for name in ("data", "config", "json"):
        value = getattr(args, f"{name}_before")
        delattr(args, f"{name}_before")
        if not value:
            continue
        if not hasattr(args, name):
            parser.error(f"--{name} has no meaning for `{args.command}`")
        if getattr(args, name):
            parser.error(f"--{name} given twice, before and after `{args.command}`")
        other = {"data": "config", "config": "data"}.get(name)
        if other is not None and getattr(args, other, None) is not None:
            parser.error(f"--{name} and --{other} name two stores: give one")
        setattr(args, name, value)
    return args


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from pystate.demo import demo

        return demo(args.path)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        return _check(args)
    if args.command == "bench":  # only without arguments; see main
        return _bench(args.bench_args)
    handler, access = _DATA_COMMANDS[args.command]
    st = _open(args, access=access)
    try:
        return handler(st, args)
    finally:
        st.close()
