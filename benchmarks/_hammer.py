"""Attackers for bench_abuse: 4 clients looping bad credentials at one token service.

    python benchmarks/_hammer.py ISSUER SECONDS

Two clients send junk admin credentials to ``/audit`` (one as a bearer token, one as HTTP
Basic), two send wrong client secrets to ``/token`` (one by ``client_secret_post``, one by
``client_secret_basic``), each with a fresh guess per request, as fast as the service
answers. Prints ``ready`` once all four run, then, when stdin closes or SECONDS pass,
one JSON line: per attacker the number of answers by HTTP status. Loopback only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import httpx


def _attack(issuer: str, kind: str, stop: threading.Event, counts: Counter[str]) -> None:
    with httpx.Client(base_url=issuer, timeout=10) as client:
        n = 0
        while not stop.is_set():
            n += 1
            guess = f"guess-{kind}-{n}"
            try:
                if kind == "audit-bearer":
                    reply = client.get("/audit", headers={"Authorization": f"Bearer {guess}"})
                elif kind == "audit-basic":
                    reply = client.get("/audit/api/records", auth=("admin", guess))
                elif kind == "token-post":
                    form = {"grant_type": "client_credentials", "client_id": "batch"}
                    reply = client.post("/token", data={**form, "client_secret": guess})
                else:
                    form = {"grant_type": "client_credentials"}
                    reply = client.post("/token", data=form, auth=("batch", guess))
                counts[str(reply.status_code)] += 1
            except httpx.HTTPError as exc:
                counts[type(exc).__name__] += 1


def main() -> int:
    issuer, seconds = sys.argv[1], float(sys.argv[2])
    stop = threading.Event()
    kinds = ["audit-bearer", "audit-basic", "token-post", "token-basic"]
    counts = {kind: Counter[str]() for kind in kinds}
    threads = [
        threading.Thread(target=_attack, args=(issuer, kind, stop, counts[kind]), daemon=True)
        for kind in kinds
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    watcher = threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True)
    watcher.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.monotonic() - started
    print(json.dumps({"seconds": elapsed, "answers": {k: dict(v) for k, v in counts.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
