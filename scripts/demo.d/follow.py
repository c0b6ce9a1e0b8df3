#!/usr/bin/env python3
"""Follows a rollout in hoist's journal, for scripts/demo (stdlib only).

  follow.py last-id URL SERVICE
      prints the id of SERVICE's newest journal entry (0 when there is none)
  follow.py wait URL SERVICE AFTER_ID TIMEOUT_S [EXPECTED_OUTCOME...]
      waits for the first entry newer than AFTER_ID to finish, printing each step as it
      ends (with its duration) and the outcome; exit 0 when the outcome is one of
      EXPECTED_OUTCOME (default: succeeded), 1 when it is another, 3 on timeout.

It reads `GET URL/api/deploys?service=SERVICE&limit=5` (newest first; each entry has
`outcome`, the running `step` and the finished `steps` with `duration_ms`).
"""

import json
import sys
import time
import urllib.parse
import urllib.request


def deploys(url, service):
    query = urllib.parse.urlencode({"service": service, "limit": 5})
    with urllib.request.urlopen(f"{url}/api/deploys?{query}", timeout=5) as response:
        return json.load(response)


def ms(value):
    return f"{value}ms" if value < 1000 else f"{value / 1000:.1f}s"


def last_id(url, service):
    entries = deploys(url, service)
    print(max((d["id"] for d in entries), default=0))
    return 0


def wait(url, service, after, timeout, expected):
    deadline = time.monotonic() + timeout
    printed = 0  # finished steps already shown
    announced = False
    while time.monotonic() < deadline:
        newer = [d for d in deploys(url, service) if d["id"] > after]
        if newer:
            d = min(newer, key=lambda d: d["id"])
            if not announced:
                print(f"    {service} rollout #{d['id']} started ({d['trigger']}), target {d['target']}",
                      flush=True)
                announced = True
            for step in d["steps"][printed:]:
                mark = "✓" if step["ok"] else "✗"
                detail = f"  {step['detail']}" if step.get("detail") else ""
                print(f"      {mark} {step['step']:<8} {ms(step['duration_ms']):>7}{detail}", flush=True)
            printed = len(d["steps"])
            if d["outcome"] != "running":
                total = (d["finished_at"] - d["started_at"]) / 1000 if d.get("finished_at") else 0
                print(f"    {service} rollout #{d['id']}: {d['outcome']} in {total:.1f}s", flush=True)
                if d.get("error"):
                    print(f"      error: {d['error'].splitlines()[0]}", flush=True)
                return 0 if d["outcome"] in expected else 1
        time.sleep(0.2)
    print(f"    {service}: no finished rollout after #{after} within {timeout:.0f}s", flush=True)
    return 3


def main(argv):
    if len(argv) == 4 and argv[1] == "last-id":
        return last_id(argv[2], argv[3])
    if len(argv) >= 6 and argv[1] == "wait":
        expected = argv[6:] or ["succeeded"]
        return wait(argv[2], argv[3], int(argv[4]), float(argv[5]), expected)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:  # Ctrl-C: scripts/demo cleans up
        sys.exit(130)
