"""OpenStack tooz as a leader-election peer, speaking the line protocol of elect's
`candidate` binary (see bench/src/lib.rs) so `cargo xtask bench` times it with the same
harness. Installed by xtask into a venv under target/ from PyPI.

Two ways of campaigning, each as tooz documents it:

- ``--backend redis``: tooz's leader election. ``join_group`` +
  ``watch_elected_as_leader``; the app calls ``run_watchers()`` every ``--poll`` seconds
  (0.1 s here), which tries the group's leader lock (a redis-py lock whose timeout is
  ``lock_timeout``, whole seconds = the TTL); the heart thread (``start_heart=True``) re-arms
  the lock every lock_timeout / 2. tooz tells the app when it is elected and never when it is
  not any more: this harness reports ``lost`` only when it resigns. Resigning is stopping the
  coordinator (tooz's redis driver does not implement ``stand_down_group_leader``); the
  harness then starts a new one and campaigns again after one TTL.
- ``--backend mysql``: tooz's MySQL lock, i.e. ``GET_LOCK`` — a *connection-bound lock*: it is
  held as long as the connection lives, whatever the holder's process is doing. Polled with
  ``acquire(blocking=False)`` every ``--poll`` seconds; resign = ``release()``.
- ``--backend postgresql``: tooz's PostgreSQL lock, i.e. ``pg_try_advisory_lock`` (psycopg2),
  connection-bound the same way, campaigned the same way.

Neither has a fencing token: ``elected`` reports term 0. Work (``--work-ms``) is done while
the app believes it leads, which is all tooz offers.
"""

import argparse
import queue
import sys
import threading
import time
import uuid

from tooz import coordination


def ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def out(what, at=None):
    sys.stdout.write(f"{at if at is not None else ns()} {what}\n")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["redis", "mysql", "postgresql"], required=True)
    p.add_argument("--url", required=True, help="redis://HOST:PORT, mysql://USER@HOST:PORT/DB or postgresql://USER@HOST:PORT/DB")
    p.add_argument("--election", default="bench")
    p.add_argument("--id", default=None)
    p.add_argument("--ttl", type=int, default=2000, help="milliseconds; tooz takes whole seconds")
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--work-ms", type=int, default=None)
    a = p.parse_args()
    me = (a.id or uuid.uuid4().hex).encode()
    ttl_s = max(1, round(a.ttl / 1000))
    group = a.election.encode()

    commands = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("exit")

    threading.Thread(target=read_stdin, daemon=True).start()

    state = {"leading": False}

    def on_elected(_event):
        state["leading"] = True
        out("elected 0")

    def start():
        if a.backend == "redis":
            sep = "&" if "?" in a.url else "?"
            url = f"{a.url}{sep}lock_timeout={ttl_s}&membership_timeout={ttl_s}"
            coord = coordination.get_coordinator(url, me)
            coord.start(start_heart=True)
            try:
                coord.create_group(group).get()
            except coordination.GroupAlreadyExist:
                pass
            coord.join_group(group).get()
            coord.watch_elected_as_leader(group, on_elected)
            return coord, None
        coord = coordination.get_coordinator(a.url, me)
        coord.start()
        return coord, coord.get_lock(b"elect-bench-" + group)

    coord, lock = start()
    out("ready")
    sit_out_until = 0.0
    next_work = 0.0
    while True:
        try:
            c = commands.get(timeout=a.poll if not (a.work_ms and state["leading"]) else min(a.poll, a.work_ms / 1000))
        except queue.Empty:
            c = None
        if c == "exit":
            break
        if c == "resign":
            if state["leading"]:
                if lock is not None:
                    lock.release()
                    state["leading"] = False
                    out("lost 0 Resigned")
                else:
                    coord.stop()  # releases the leader lock
                    state["leading"] = False
                    out("lost 0 Resigned")
                    coord, lock = start()
                sit_out_until = time.monotonic() + a.ttl / 1000
            continue
        if c == "lease":
            if lock is None:
                # The redis-py lock behind tooz's leader election.
                ms = coord._client.pttl(coord._get_leader_lock(group).name)
                out(f"lease {ms * 1_000_000} 0" if ms is not None and ms >= 0 else "lease none")
            else:
                out("lease none")
            continue
        now = time.monotonic()
        if state["leading"]:
            if a.work_ms and now >= next_work:
                out("work 0")
                next_work = now + a.work_ms / 1000
            if lock is None:
                coord.run_watchers()
            continue
        if now < sit_out_until:
            continue
        if lock is None:
            coord.run_watchers()
        elif lock.acquire(blocking=False):
            on_elected(None)
    if state["leading"]:
        if lock is not None:
            lock.release()
        out("lost 0 Resigned")
    coord.stop()
    out("stopped")


if __name__ == "__main__":
    main()
