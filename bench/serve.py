"""``pystate serve`` through iii-sdk against redis-py on a local redis-server.

Both servers run on loopback in this run; each client is a process of its
own making one blocking call at a time (the SDK's ``trigger``, redis-py's
``hset``/``hget``). For 1 and 8 client processes and each of set, get and
update, rounds alternate between the two systems; calls per second are
summed over the clients, latencies pooled for p50 and p99, and the table
gives the median of the rounds and pystate's throughput as a fraction of
redis-py's (1.00: as fast; higher is better). Update is an increment of
one field of the ~210-byte object. A third column sends the
same frames from a minimal blocking WebSocket client, to tell the server's
cost from the SDK's. The baseline update is what a
program would write by hand against Redis: HGET, decode, change, encode,
HSET (two round trips, not atomic); pystate's is one ``state::update``.
Last, the server's resident memory before and after one worker registers
10,000 state triggers.

    python bench/serve.py [--calls 4000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

from pystate.bench.redis_server import start_redis
from pystate.bench.workload import make_value

OPS = ("set", "get", "update")
# Thousands of updates hit each client's key: an increment keeps the value
# at its size (the workload's append would grow it by a word per call).
UPDATE_OPS = [{"type": "increment", "path": "age", "by": 1}]


def _update_by_hand(raw: bytes) -> bytes:
    value = orjson.loads(raw)
    value["age"] = value.get("age", 0) + 1
    return orjson.dumps(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---- clients (each in its own process) -------------------------------------------


def _sdk_client(url, op, n, idx, ready, go, out):
    from iii import InitOptions, register_worker

    w = register_worker(url, InitOptions(otel={"enabled": False}, invocation_timeout_ms=60_000))
    key = f"k{idx}"
    value = make_value(idx)
    trigger = w.trigger
    set_req = {"function_id": "state::set", "payload": {"scope": "bench", "key": key, "value": value}}
    requests = {
        "set": set_req,
        "get": {"function_id": "state::get", "payload": {"scope": "bench", "key": key}},
        "update": {"function_id": "state::update", "payload": {"scope": "bench", "key": key, "ops": UPDATE_OPS}},
    }
    trigger(set_req)
    req = requests[op]
    for _ in range(200):  # warm up the connection and both loops
        trigger(req)
    out.put(_timed(lambda: trigger(req), n, ready, go))
    w.shutdown()


def _ws_client(url, op, n, idx, ready, go, out):
    """The same frames as the SDK sends, from a minimal blocking client:
    what the server costs without the SDK's own overhead."""
    from websockets.sync.client import connect

    ws = connect(url, compression=None, max_size=2**26).__enter__()
    ws.recv()  # workerregistered
    key = f"k{idx}"
    payloads = {
        "set": {"scope": "bench", "key": key, "value": make_value(idx)},
        "get": {"scope": "bench", "key": key},
        "update": {"scope": "bench", "key": key, "ops": UPDATE_OPS},
    }
    frame = orjson.dumps({"type": "invokefunction", "invocation_id": "i", "function_id": f"state::{op}",
                          "data": payloads[op]})
    seed = orjson.dumps({"type": "invokefunction", "invocation_id": "i", "function_id": "state::set",
                         "data": payloads["set"]})
    ws.send(seed, text=True)
    ws.recv()

    def call():
        ws.send(frame, text=True)
        orjson.loads(ws.recv())

    for _ in range(200):
        call()
    out.put(_timed(call, n, ready, go))
    ws.close()


def _redis_client(url, op, n, idx, ready, go, out):
    import redis

    r = redis.Redis.from_url(url)
    key = f"k{idx}"
    data = orjson.dumps(make_value(idx))
    r.hset("state:bench", key, data)

    def update():
        r.hset("state:bench", key, _update_by_hand(r.hget("state:bench", key)))

    calls = {
        "set": lambda: r.hset("state:bench", key, data),
        "get": lambda: orjson.loads(r.hget("state:bench", key)),
        "update": update,
    }
    call = calls[op]
    for _ in range(200):
        call()
    out.put(_timed(call, n, ready, go))
    r.close()


def _timed(call, n, ready, go):
    ready.put(1)
    go.wait()
    now = time.perf_counter_ns
    lat = [0] * n
    t0 = now()
    for i in range(n):
        t = now()
        call()
        lat[i] = now() - t
    return (now() - t0) / 1e9, lat


def run_clients(target, url, op, clients, n):
    ctx = mp.get_context("spawn")  # a clean interpreter per client, no inherited threads
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, op, n, i, ready, go, out)) for i in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()  # every client starts timing together
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    seconds = max(s for s, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    return {
        "calls_per_s": clients * n / seconds,
        "p50_us": lat[len(lat) // 2] / 1000,
        "p99_us": lat[int(len(lat) * 0.99)] / 1000,
    }


# ---- servers ------------------------------------------------------------------------------


def start_pystate(tmp):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pystate", "serve", "--data", os.path.join(tmp, "data"), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"pystate serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def trigger_memory(url, pid, count=10_000):
    from iii import InitOptions, register_worker

    w = register_worker(url, InitOptions(otel={"enabled": False}, invocation_timeout_ms=60_000))
    w.register_function("bench::on_change", lambda event: None)
    w.trigger({"function_id": "state::list_groups", "payload": {}})
    time.sleep(0.5)
    before = _rss_kib(pid)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(count):
            w.register_trigger({"type": "state", "function_id": "bench::on_change",
                                "config": {"scope": f"scope-{i}", "key": f"key-{i}"}})
    w.trigger({"function_id": "state::list_groups", "payload": {}})  # all of them are in
    time.sleep(0.5)
    after = _rss_kib(pid)
    w.shutdown()
    return {"triggers": count, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_trigger": (after - before) * 1024 / count}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=4000, help="timed calls per client per round (default 4000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell (default 3)")
    ap.add_argument("--clients", default="1,8", help="client process counts (default 1,8)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="pystate-bench-serve-")
    rproc, rurl = start_redis(tmp)
    pproc, purl = start_pystate(tmp)
    rows = []
    try:
        for clients in [int(c) for c in args.clients.split(",")]:
            n = max(200, args.calls // clients) if clients > 1 else args.calls
            for op in OPS:
                ours, base, raw = [], [], []
                for _ in range(args.rounds):
                    base.append(run_clients(_redis_client, rurl, op, clients, n))
                    ours.append(run_clients(_sdk_client, purl, op, clients, n))
                    raw.append(run_clients(_ws_client, purl, op, clients, n))
                med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
                ratios = [o["calls_per_s"] / b["calls_per_s"] for o, b in zip(ours, base)]
                rows.append({
                    "op": op, "clients": clients,
                    "pystate_calls_per_s": med(ours, "calls_per_s"), "redis_calls_per_s": med(base, "calls_per_s"),
                    "pystate_p50_us": med(ours, "p50_us"), "pystate_p99_us": med(ours, "p99_us"),
                    "redis_p50_us": med(base, "p50_us"), "redis_p99_us": med(base, "p99_us"),
                    "throughput_ratio": statistics.median(ratios),
                    "raw_ws_calls_per_s": med(raw, "calls_per_s"), "raw_ws_p50_us": med(raw, "p50_us"),
                    "raw_ws_ratio": statistics.median(w["calls_per_s"] / b["calls_per_s"] for w, b in zip(raw, base)),
                })
                r = rows[-1]
                print(f"{op:7} x{clients}  pystate {r['pystate_calls_per_s']:8.0f}/s p50 {r['pystate_p50_us']:6.0f} us "
                      f"p99 {r['pystate_p99_us']:6.0f} us | redis-py {r['redis_calls_per_s']:8.0f}/s "
                      f"p50 {r['redis_p50_us']:6.0f} us p99 {r['redis_p99_us']:6.0f} us | ratio {r['throughput_ratio']:.2f} "
                      f"| raw ws client {r['raw_ws_calls_per_s']:8.0f}/s ({r['raw_ws_ratio']:.2f})",
                      flush=True)
        mem = trigger_memory(purl, pproc.pid)
        print(f"server RSS {mem['rss_before_kib'] / 1024:.1f} MiB -> {mem['rss_after_kib'] / 1024:.1f} MiB "
              f"with {mem['triggers']:,} triggers ({mem['bytes_per_trigger']:.0f} bytes each)")
    finally:
        pproc.terminate()
        pproc.wait(30)
        rproc.kill()
        rproc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "memory": mem}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
