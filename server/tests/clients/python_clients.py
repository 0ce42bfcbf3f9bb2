#!/usr/bin/env python3
"""KV, txn and watch through two Python etcd clients, unchanged: pyetcd
(etcd-sdk-python, gRPC over grpcio) and etcd3gw (the HTTP/JSON gateway).
Run by server/tests/clients.rs as `python python_clients.py <client port>`;
any failed assertion or exception exits non-zero. Bounded: 60 s in all."""
import base64
import os
import signal
import sys
import threading
import time
import traceback

import etcd3gw
import pyetcd

PORT = int(sys.argv[1])
signal.alarm(60)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def first_event(events, put, deadline_s=10):
    """Puts (again) until the watch delivers an event: the watch may be set
    up asynchronously."""
    got = []
    t = threading.Thread(target=lambda: got.append(next(events)), daemon=True)
    t.start()
    end = time.time() + deadline_s
    while not got and time.time() < end:
        put()
        t.join(0.2)
    assert got, "no watch event within %d s" % deadline_s
    return got[0]


def check_pyetcd():
    c = pyetcd.client("127.0.0.1", PORT)
    c.put("py/a", "1")
    value, meta = c.get("py/a")
    assert value == b"1", value
    assert meta.mod_revision > 1
    c.put("py/b", "2")
    assert len(list(c.get_prefix("py/"))) == 2
    ok, _ = c.transaction(
        compare=[c.transactions.value("py/a") == "1"],
        success=[c.transactions.put("py/a", "11")],
        failure=[c.transactions.get("py/a")],
    )
    assert ok, "txn should succeed"
    ok, responses = c.transaction(
        compare=[c.transactions.value("py/a") == "1"],
        success=[],
        failure=[c.transactions.get("py/a")],
    )
    assert not ok
    assert responses[0][0][0] == b"11", responses
    events, cancel = c.watch("py/a")
    ev = first_event(events, lambda: c.put("py/a", "12"))
    assert ev.key == b"py/a" and ev.value == b"12", ev
    cancel()
    assert c.delete("py/b")
    lease = c.lease(60)
    c.put("py/leased", "v", lease=lease)
    assert c.get("py/leased")[0] == b"v"
    lease.revoke()
    assert c.get("py/leased")[0] is None
    st = c.status()
    assert st.leader is not None
    print("pyetcd ok", flush=True)


def check_etcd3gw():
    g = etcd3gw.client(host="127.0.0.1", port=PORT)
    assert g.put("gw/a", "1")
    assert g.get("gw/a") == [b"1"], g.get("gw/a")
    g.put("gw/b", "2")
    assert len(g.get_prefix("gw/")) == 2
    txn = {
        "compare": [{"key": b64("gw/a"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("gw/a"), "value": b64("11")}}],
        "failure": [],
    }
    r = g.transaction(txn)
    assert r.get("succeeded"), r
    assert g.get("gw/a") == [b"11"]
    events, cancel = g.watch("gw/a")
    ev = first_event(events, lambda: g.put("gw/a", "12"))
    # etcd3gw decodes the event's base64 fields.
    assert ev["kv"]["key"] == b"gw/a", ev
    assert ev["kv"]["value"] == b"12", ev
    cancel()
    assert g.delete("gw/b")
    assert g.status()["leader"]
    assert len(g.members()) == 1
    print("etcd3gw ok", flush=True)


try:
    check_pyetcd()
    check_etcd3gw()
except BaseException:
    traceback.print_exc()
    sys.stdout.flush()
    # Watch threads of a failed check must not keep the process alive.
    os._exit(1)
os._exit(0)
