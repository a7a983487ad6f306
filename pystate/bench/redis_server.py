"""A throwaway redis-server on a free loopback port, for the benchmarks that
compare against Redis (pystate bench; bench/test_redis.py and bench/serve.py of a
source checkout)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from typing import Callable

__all__ = ["start_redis"]


def _dies_with_its_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send SIGTERM to the child when the
    thread that started it dies (Linux: PR_SET_PDEATHSIG), so a benchmark
    killed mid-run (a timeout, Ctrl-C twice) leaves no redis-server behind.
    The function is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def start_redis(data_dir: str) -> tuple[subprocess.Popen, str]:
    """Start redis-server (no persistence) with ``data_dir`` as its
    directory; return the process and its URL once it answers PING. Call
    it from a thread that outlives the server (the main thread): the server
    is stopped when that thread ends."""
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        preexec_fn=_dies_with_its_parent(),
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
