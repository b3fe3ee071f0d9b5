"""Figures 1 (under load) and 2: A2A ``SendMessage`` throughput and latency, side by side.

All servers run at once, each its own uvicorn process (one worker) on a free loopback port;
wrk drives one at a time with 32 connections, and the runs are interleaved (server A, B, ...,
then again) so that drift in the machine's load hits every server alike.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from _common import (
    HOST,
    Plan,
    ServerSpec,
    free_port,
    profile_under_load,
    ratio,
    running_servers,
    summarize,
    write_lines,
    wrk,
)
from _issuer import BenchIssuer

EXPECT = "TASK_STATE_COMPLETED"

# (variant, server kind, how the request authenticates)
VARIANTS: list[tuple[str, str, str]] = [
    ("keycard_auth", "keycard", "token"),
    ("keycard_auth_fresh_tokens", "keycard", "fresh"),
    ("keycard_noauth", "keycard-noauth", "none"),
    ("a2a_sdk_noauth", "a2a-sdk", "none"),
    ("a2a_sdk_static_bearer", "a2a-sdk-bearer", "static"),
    ("fastapi_bare", "fastapi", "none"),
    ("fastapi_jwt", "fastapi-jwt", "token"),
]

LABELS = {
    "keycard_auth": "keycard-agents, auth on (same token)",
    "keycard_auth_fresh_tokens": "keycard-agents, auth on (every token new)",
    "keycard_noauth": "keycard-agents, auth off",
    "a2a_sdk_noauth": "a2a-sdk 1.3.0, no auth",
    "a2a_sdk_static_bearer": "a2a-sdk 1.3.0, static bearer",
    "fastapi_bare": "bare FastAPI",
    "fastapi_jwt": "bare FastAPI + JWT check",
}

STATIC_TOKEN = "static-bench-token-" + "0" * 24  # a fixed shared secret for the a2a-sdk check


def send_message_body() -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": {
                    "messageId": uuid.uuid4().hex,
                    "role": "ROLE_USER",
                    "parts": [{"text": "hello"}],
                }
            },
        },
        separators=(",", ":"),
    )


def _probe(url: str, headers: dict[str, str], body: str) -> None:
    """One request before the load: the server answers correctly (else the run is void)."""
    reply = httpx.post(
        url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=10
    )
    if reply.status_code != 200 or EXPECT not in reply.text:
        raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")


def run(plan: Plan, issuer: BenchIssuer) -> dict[str, Any]:
    work = plan.work
    issuer.write_jwks(work)
    (work / "static-token.txt").write_text(STATIC_TOKEN, encoding="ascii")
    body_file = work / "send-message.json"
    body_file.write_text(send_message_body(), encoding="utf-8")
    body = body_file.read_text(encoding="utf-8")
    kinds = sorted({kind for _, kind, _ in VARIANTS})
    ports = {kind: free_port() for kind in kinds}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v, _, _ in VARIANTS}
    specs = [
        ServerSpec(
            kind,
            [
                sys.executable,
                str(Path(__file__).with_name("servers.py")),
                kind,
                "--port",
                str(ports[kind]),
                "--work",
                str(work),
            ],
            ports[kind],
        )
        for kind in kinds
    ]
    plan.log(f"starting {len(kinds)} servers")
    with running_servers(specs, log_dir=work) as servers:
        tokens = {
            kind: issuer.token(aud=f"http://{HOST}:{ports[kind]}")
            for kind in ("keycard", "fastapi-jwt")
        }
        a2a = {"A2A-Version": "1.0"}
        for _variant, kind, auth in VARIANTS:
            headers = dict(a2a)
            if auth in ("token", "fresh"):
                headers["Authorization"] = f"Bearer {tokens[kind]}"
            elif auth == "static":
                headers["Authorization"] = f"Bearer {STATIC_TOKEN}"
            _probe(servers[kind].url + "/", headers, body)
        for rep in range(plan.reps):
            for variant, kind, auth in VARIANTS:
                url = servers[kind].url + "/"
                options: dict[str, Any] = {
                    "duration": plan.duration,
                    "connections": plan.connections,
                    "body_file": body_file,
                    "extra_headers": a2a,
                    "expect": EXPECT,
                }
                if auth == "token":
                    options["auth"] = f"Bearer {tokens[kind]}"
                elif auth == "static":
                    options["auth"] = f"Bearer {STATIC_TOKEN}"
                elif auth == "fresh":
                    # Enough never-seen tokens for the run at well above the expected rate.
                    count = int(plan.duration * 4000) + 1000
                    aud = f"http://{HOST}:{ports[kind]}"
                    options["auth_file"] = write_lines(
                        work / "fresh-tokens.txt",
                        [f"Bearer {issuer.token(aud=aud)}" for _ in range(count)],
                    )
                if rep == 0 and plan.warmup > 0 and auth != "fresh":
                    wrk(url, **{**options, "duration": plan.warmup})
                result = wrk(url, pid=servers[kind].process.pid, **options)
                plan.log(f"  {variant:28s} rep {rep + 1}: {result.describe()}")
                runs[variant].append(result.as_dict())
        profiles: dict[str, Any] = {}
        if not plan.quick:
            for kind, auth in (("keycard", "token"), ("a2a-sdk", "none")):
                profiles[kind] = profile_under_load(
                    servers[kind].process.pid,
                    plan.duration,
                    work / f"profile-{kind}.txt",
                    lambda kind=kind, auth=auth: wrk(
                        servers[kind].url + "/",
                        duration=plan.duration,
                        connections=plan.connections,
                        body_file=body_file,
                        extra_headers=a2a,
                        auth=f"Bearer {tokens[kind]}" if auth == "token" else None,
                    ),
                )
    summary = summarize_runs(runs)
    summary["profiles"] = profiles
    return summary


def summarize_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    for variant, results in runs.items():
        variants[variant] = {
            "label": LABELS[variant],
            "requests_per_sec": summarize([r["requests_per_sec"] for r in results]),
            "p50_ms": summarize([r["p50_ms"] for r in results]),
            "p90_ms": summarize([r["p90_ms"] for r in results]),
            "p99_ms": summarize([r["p99_ms"] for r in results]),
            "max_ms": summarize([r["max_ms"] for r in results]),
            "p99_over_p50": summarize(
                [r["p99_ms"] / r["p50_ms"] for r in results if r["p50_ms"] > 0]
            ),
            "server_cpu_us_per_request": summarize(
                [r["server_cpu_us_per_request"] for r in results if r["server_cpu_us_per_request"]]
            ),
            "loadavg_1min": [r["loadavg_1min"] for r in results],
            "bad_responses": sum(r["non_2xx"] + r["errors"] for r in results),
            "reused_inputs": sum(r["reused"] for r in results),
            "runs": results,
        }

    def per_run_ratio(a: str, b: str, key: str = "requests_per_sec") -> dict[str, Any]:
        values = [ratio(x[key], y[key]) for x, y in zip(runs[a], runs[b], strict=True) if y[key]]
        return summarize([v for v in values if v is not None])

    def per_request_ms(rps: float) -> float:
        return 1000.0 / rps if rps else float("nan")

    overhead = [
        per_request_ms(on["requests_per_sec"]) - per_request_ms(off["requests_per_sec"])
        for on, off in zip(runs["keycard_auth"], runs["keycard_noauth"], strict=True)
    ]
    overhead_fresh = [
        per_request_ms(on["requests_per_sec"]) - per_request_ms(off["requests_per_sec"])
        for on, off in zip(runs["keycard_auth_fresh_tokens"], runs["keycard_noauth"], strict=True)
    ]
    ratios = {
        "keycard_auth_vs_a2a_sdk_noauth": per_run_ratio("keycard_auth", "a2a_sdk_noauth"),
        "keycard_auth_vs_a2a_sdk_static_bearer": per_run_ratio(
            "keycard_auth", "a2a_sdk_static_bearer"
        ),
        "keycard_auth_vs_fastapi_jwt": per_run_ratio("keycard_auth", "fastapi_jwt"),
        "keycard_auth_vs_fastapi_jwt_by_server_cpu": summarize(
            [
                y["server_cpu_us_per_request"] / x["server_cpu_us_per_request"]
                for x, y in zip(runs["keycard_auth"], runs["fastapi_jwt"], strict=True)
                if x["server_cpu_us_per_request"] and y["server_cpu_us_per_request"]
            ]
        ),
        "keycard_auth_fresh_vs_fastapi_jwt": per_run_ratio(
            "keycard_auth_fresh_tokens", "fastapi_jwt"
        ),
        "keycard_auth_vs_keycard_noauth": per_run_ratio("keycard_auth", "keycard_noauth"),
        "fastapi_jwt_vs_fastapi_bare": per_run_ratio("fastapi_jwt", "fastapi_bare"),
    }
    return {
        "variants": variants,
        "ratios": ratios,
        "auth_overhead_ms_per_request": {
            "same_token": summarize(overhead),
            "fresh_tokens": summarize(overhead_fresh),
            "note": "1000/rps(auth on) - 1000/rps(auth off), same run; server-side time per "
            "request at saturation (one worker, so time per request = 1/throughput)",
        },
    }
