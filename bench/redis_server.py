"""A throwaway redis-server on a free loopback port, for the benchmarks that
compare against Redis (test_redis.py, serve.py)."""

from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["start_redis"]


def start_redis(data_dir: str) -> tuple[subprocess.Popen, str]:
    """Start redis-server (no persistence) with ``data_dir`` as its
    directory; return the process and its URL once it answers PING."""
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
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
