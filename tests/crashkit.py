"""A writer process to kill, and the model to check it against.

The writer (run as ``python crashkit.py PATH SYNC SEED START [HOOK_STEP]``)
opens a file-based store and performs the deterministic operation
sequence op(SEED, START), op(SEED, START + 1), ..., printing "ack I" after
operation I has returned. The parent kills it at a moment of its choosing;
every acknowledged operation must then be in the store, and nothing else
but possibly the one operation that was in flight.

With HOOK_STEP, the writer compacts after a few writes and stops at that
compaction step ("written", "synced", "renamed", "done"), printing "hook"
and waiting to be killed.
"""

from __future__ import annotations

import copy
import random
import sys
import time

SCOPES = ["alpha", "beta", "gamma/δ", ""]


def op(seed: int, i: int) -> tuple:
    r = random.Random(seed * 1_000_003 + i)
    scope = r.choice(SCOPES)
    key = f"k{r.randrange(40)}"
    kind = r.choices(["set", "update", "delete"], weights=[5, 4, 1])[0]
    if kind == "set":
        return ("set", scope, key, {"n": i, "pad": "p" * r.randrange(300)})
    if kind == "update":
        return ("update", scope, key, r.randrange(1, 10))
    return ("delete", scope, key, None)


def apply_model(model: dict, o: tuple) -> None:
    kind, scope, key, arg = o
    t = model.setdefault(scope, {})
    if kind == "set":
        t[key] = copy.deepcopy(arg)
    elif kind == "update":
        if key in t:
            t[key]["n"] += arg
        else:
            t[key] = {"n": arg}
    else:
        t.pop(key, None)
    if not t:
        del model[scope]


def apply_store(st, o: tuple) -> None:
    kind, scope, key, arg = o
    if kind == "set":
        st.set(scope, key, arg)
    elif kind == "update":
        st.update(scope, key, [{"type": "increment", "path": "n", "by": arg}])
    else:
        st.delete(scope, key)


def snapshot(st) -> dict:
    """Everything in a store, as {scope: {key: value}} (keys from a
    listing of values: values carry no keys, so read them one by one)."""
    out = {}
    for scope in st.list_groups():
        out[scope] = {k: st.get(scope, k) for k in (f"k{i}" for i in range(40)) if st.get(scope, k) is not None}
    return out


def main(argv: list[str]) -> None:
    import pystate

    path, sync, seed, start = argv[0], argv[1], int(argv[2]), int(argv[3])
    hook_step = argv[4] if len(argv) > 4 else None

    def hook(step):
        if step == hook_step:
            print("hook", step, flush=True)
            while True:
                time.sleep(1)

    st = pystate.State(
        path,
        sync=sync,
        _compact_hook=hook if hook_step else None,
        _compact_min_dead=4096 if seed % 2 else 0,
    )
    i = start
    while True:
        apply_store(st, op(seed, i))
        sys.stdout.write(f"ack {i}\n")  # one write: a line is whole or cut
        sys.stdout.flush()
        i += 1
        if hook_step and i - start == 30:
            st.compact()


if __name__ == "__main__":
    main(sys.argv[1:])
