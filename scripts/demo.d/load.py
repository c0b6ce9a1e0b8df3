#!/usr/bin/env python3
"""Fixed-rate HTTP load through Traefik, for scripts/demo (stdlib only).

Sends GET requests at --rate per second to --target with a Host header, over keep-alive
connections (one per worker thread), until SIGTERM/SIGINT or --duration seconds. Every
--slow-every-th request asks the demo app to hold it --slow-ms (`/?delay_ms=N`), so that
requests are always in flight when a container leaves Traefik's pool.

A request fails when it gets a status other than 200, a connection error or a timeout
(--timeout, per socket operation). The demo app answers its version on `/`; successful
answers are counted per version.

At the end it prints one summary line (plus the first failures, if any) and, with --json,
writes the counts to a file:

  {"label": ..., "elapsed_s": ..., "sent": N, "ok": N, "failed": N,
   "versions": {"v1": N, ...}, "failure_kinds": {"status 502": N, ...}}
"""

import argparse
import http.client
import json
import queue
import signal
import socket
import sys
import threading
import time
from collections import Counter

KEPT_FAILURES = 5


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.versions = Counter()
        self.kinds = Counter()
        self.failures = []  # (seconds since start, kind, detail)

    def started(self):
        with self.lock:
            self.sent += 1

    def success(self, version):
        with self.lock:
            self.ok += 1
            self.versions[version] += 1

    def failure(self, at, kind, detail):
        with self.lock:
            self.failed += 1
            self.kinds[kind] += 1
            if len(self.failures) < KEPT_FAILURES:
                self.failures.append((at, kind, detail))


def classify(error):
    """A short kind for an exception raised while sending or reading."""
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, http.client.RemoteDisconnected):
        return "closed without a response"
    if isinstance(error, OSError):
        return "connection error"
    return "request error"


def worker(args, tickets, tally, started_at):
    host, port = args.target.rsplit(":", 1)
    conn = None
    while True:
        ticket = tickets.get()
        if ticket is None:
            break
        path = "/"
        if args.slow_every and ticket % args.slow_every == args.slow_every - 1:
            path = f"/?delay_ms={args.slow_ms}"
        at = time.monotonic() - started_at
        tally.started()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
            conn.request("GET", path, headers={"Host": args.host})
            response = conn.getresponse()
            body = response.read().decode("utf-8", "replace").strip()
            if response.status == 200:
                tally.success(body or "(empty)")
            else:
                tally.failure(at, f"status {response.status}", body[:120])
            if response.will_close:
                conn.close()
                conn = None
        except Exception as error:  # every failure counts, whatever it is
            tally.failure(at, classify(error), f"{type(error).__name__}: {error}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT, e.g. 127.0.0.1:8080")
    parser.add_argument("--host", required=True, help="the Host header (selects the router)")
    parser.add_argument("--rate", type=int, default=100, help="requests per second")
    parser.add_argument("--slow-every", type=int, default=10)
    parser.add_argument("--slow-ms", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=0, help="0: until signalled")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--label", default=None, help="name in the summary line")
    parser.add_argument("--json", default=None, help="write the counts here at the end")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    tally = Tally()
    tickets = queue.Queue()
    started_at = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(args, tickets, tally, started_at), daemon=True)
        for _ in range(args.workers)
    ]
    for t in threads:
        t.start()

    # The schedule is absolute (start + n/rate), so a late wake-up does not lower the rate.
    n = 0
    while not stop.is_set():
        if args.duration and time.monotonic() - started_at >= args.duration:
            break
        due = started_at + n / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
            continue
        tickets.put(n)
        n += 1

    # Requests already handed to a worker finish (each within --timeout); tickets no worker
    # picked up yet are dropped, so stopping takes at most one timeout.
    try:
        while True:
            tickets.get_nowait()
    except queue.Empty:
        pass
    for _ in threads:
        tickets.put(None)
    for t in threads:
        t.join(timeout=args.timeout + 5)
    elapsed = time.monotonic() - started_at

    with tally.lock:
        # A request still running after the joins had far more than --timeout: a failure.
        unfinished = tally.sent - tally.ok - tally.failed
        if unfinished > 0:
            tally.failed += unfinished
            tally.kinds["unfinished"] += unfinished
        label = args.label or args.host
        versions = " ".join(f"{v}={c}" for v, c in sorted(tally.versions.items())) or "-"
        line = (
            f"{label}: {elapsed:.1f}s at {tally.sent / max(elapsed, 0.001):.0f} req/s: "
            f"sent {tally.sent}, ok {tally.ok}, failed {tally.failed}; versions {versions}"
        )
        print(line, flush=True)
        if tally.failed:
            kinds = ", ".join(f"{k}={c}" for k, c in sorted(tally.kinds.items()))
            print(f"  failures: {kinds}", flush=True)
            for at, kind, detail in tally.failures:
                print(f"    +{at:.3f}s {kind}: {detail}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "label": label,
                        "elapsed_s": round(elapsed, 3),
                        "sent": tally.sent,
                        "ok": tally.ok,
                        "failed": tally.failed,
                        "versions": dict(tally.versions),
                        "failure_kinds": dict(tally.kinds),
                    },
                    f,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
