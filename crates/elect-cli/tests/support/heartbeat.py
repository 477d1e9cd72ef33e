"""A program's background worker for the supervision tests: appends `HOST TERM MONOTONIC_NS` to
FILE every 20 ms until killed. CLOCK_MONOTONIC is one clock for every process of the machine, so
the heartbeats of different hosts can be compared."""
import os
import sys
import time

host, term, path = sys.argv[1:4]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
while True:
    # One write of one short line: O_APPEND makes it land whole.
    os.write(fd, f"{host} {term} {time.monotonic_ns()}\n".encode())
    time.sleep(0.02)
