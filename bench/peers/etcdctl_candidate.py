"""etcd's own election client, `etcdctl elect`, as a leader-election peer, speaking the line
protocol of elect's `candidate` binary (see bench/src/lib.rs) so `cargo xtask bench` times it
with the same harness. Needs only python3 and `etcdctl` (Debian's etcd-client).

``etcdctl elect ELECTION PROPOSAL`` is the reference client of etcd's election recipe
(``clientv3/concurrency``): it opens a session (a lease, kept alive by the client), puts a key
``ELECTION/<lease id>`` under that lease, waits until every older key under the prefix is gone,
prints the key and the proposal, and holds leadership until it is interrupted (then it resigns:
deletes its key) or its session ends. What that gives an application, as measured here:

- the session TTL is not configurable in etcdctl 3.4 (Debian 12's): 60 s, so a crashed or
  frozen leader is replaced only after a minute, whatever the bench's TTL;
- no fencing token is printed (the key's create revision is the recipe's token, but the client
  does not show it): ``elected`` reports term 0;
- after ``elected`` nothing tells the holder it lost leadership but the session ending, which
  etcdctl reports by exiting with "session expired" (reported here as ``lost 0 SessionExpired``).

The bench signals this script's process group, so SIGKILL and SIGSTOP reach etcdctl too.
Resigning is SIGINT to etcdctl (its own resign path); the harness then sits out one TTL and
campaigns again, as it does for tooz.
"""

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid


def ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def out(what):
    sys.stdout.write(f"{ns()} {what}\n")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="etcd://HOST:PORT[,HOST:PORT...]")
    p.add_argument("--election", default="bench")
    p.add_argument("--id", default=None)
    p.add_argument("--ttl", type=int, default=2000, help="ms; only the sit-out after a resign")
    p.add_argument("--work-ms", type=int, default=None)
    p.add_argument("--etcdctl", default="etcdctl")
    a = p.parse_args()
    endpoints = a.url.split("://", 1)[-1].rstrip("/")
    me = a.id or uuid.uuid4().hex
    events = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            events.put(("command", line.strip()))
        events.put(("command", "exit"))

    threading.Thread(target=read_stdin, daemon=True).start()

    def campaign():
        env = dict(os.environ, ETCDCTL_API="3")
        child = subprocess.Popen(
            [a.etcdctl, f"--endpoints={endpoints}", "elect", a.election, me],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )

        def read_child():
            # etcdctl prints the leader key, then the proposal, once elected.
            first = True
            for _line in child.stdout:
                if first:
                    events.put(("elected", child))
                    first = False
            child.wait()
            events.put(("exited", child))

        threading.Thread(target=read_child, daemon=True).start()
        return child

    out("ready")
    child = campaign()
    leading = False
    sit_out_until = None
    next_work = 0.0
    while True:
        timeout = 0.05
        if leading and a.work_ms:
            timeout = max(0.0, min(timeout, next_work - time.monotonic()))
        try:
            kind, what = events.get(timeout=timeout)
        except queue.Empty:
            kind, what = None, None
        if kind == "elected" and what is child:
            leading = True
            out("elected 0")
            next_work = 0.0
        elif kind == "exited" and what is child:
            # Campaign again at once after a lost session; a second later after a failed
            # campaign (etcd unreachable), so a dead server is not a spawning loop.
            sit_out_until = time.monotonic() + (0.0 if leading else 1.0)
            if leading:
                out("lost 0 SessionExpired")
            leading = False
            child = None
        elif kind == "command" and what == "exit":
            break
        elif kind == "command" and what == "resign":
            if leading and child is not None:
                child.send_signal(signal.SIGINT)
                child.wait()
                leading = False
                child = None
                out("lost 0 Resigned")
                sit_out_until = time.monotonic() + a.ttl / 1000
        elif kind == "command" and what == "lease":
            out("lease none")
        elif kind == "command" and what == "stats":
            out("stats 0")
        now = time.monotonic()
        if child is None and sit_out_until is not None and now >= sit_out_until:
            sit_out_until = None
            child = campaign()
        if leading and a.work_ms and now >= next_work:
            out("work 0")
            next_work = now + a.work_ms / 1000
    if child is not None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
    if leading:
        out("lost 0 Resigned")
    out("stopped")


if __name__ == "__main__":
    main()
