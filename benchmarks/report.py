"""Turn ``results.json`` into ``REPORT.md`` with tables, verdicts and PNG charts.

    python benchmarks/report.py RESULTS_DIR     # re-render from RESULTS_DIR/results.json

Every figure is the median over the repeated runs with its spread [min – max]; every
comparison is a ratio of runs taken in the same session, paired run by run. Hand-written
analysis (what limits a missed target, what would fix it) comes from ``NOTES.md`` next to
this file and is appended verbatim.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOTES = Path(__file__).with_name("NOTES.md")
MIB = 1024 * 1024


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _s(stat: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    """median [min – max] of a summarized statistic."""
    if not stat or stat.get("median") is None:
        return "n/a"
    med, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    if len(stat.get("runs", [])) <= 1:
        return _f(med, digits)
    return f"{_f(med, digits)} [{_f(lo, digits)} – {_f(hi, digits)}]"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**MISSED**"


def _median(stat: dict[str, Any] | None) -> float | None:
    return None if not stat else stat.get("median")


# ----------------------------------------------------------------------------- targets


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, target, measured, met?) for every target of the brief."""
    figs = results["figures"]
    rows: list[tuple[str, str, str, bool | None]] = []
    verify = figs.get("verify")
    if verify:
        first = _median(verify["first_seen_vs_raw"])
        again = _median(verify["seen_again_vs_raw"])
        checks = all(verify["checks"].values())
        rows.append(
            (
                "1",
                "token seen first: ≤ 1.2x raw joserfc verify",
                f"{_s(verify['first_seen_vs_raw'])}x",
                None if first is None else first <= 1.2,
            )
        )
        rows.append(
            (
                "1",
                "token seen again: ≤ 0.2x raw verify, no check weakened",
                f"{_s(verify['seen_again_vs_raw'], 3)}x; checks kept: {checks}",
                None if again is None else again <= 0.2 and checks,
            )
        )
    http = figs.get("http")
    if http:
        sdk = _median(http["ratios"]["keycard_auth_vs_a2a_sdk_noauth"])
        ceiling = _median(http["ratios"]["keycard_auth_vs_fastapi_jwt"])
        rows.append(
            (
                "2",
                "≥ 3x a2a-sdk throughput, our auth on (a2a-sdk without auth)",
                f"{_s(http['ratios']['keycard_auth_vs_a2a_sdk_noauth'])}x",
                None if sdk is None else sdk >= 3.0,
            )
        )
        rows.append(
            (
                "2",
                "≥ 0.7x bare FastAPI + JWT throughput",
                f"{_s(http['ratios']['keycard_auth_vs_fastapi_jwt'])}x (by server CPU per "
                f"request: {_s(http['ratios'].get('keycard_auth_vs_fastapi_jwt_by_server_cpu'))}x)",
                None if ceiling is None else ceiling >= 0.7,
            )
        )
        auth = http["variants"]["keycard_auth"]
        tail = _median(auth.get("p99_over_p50") or {})
        rows.append(
            (
                "2",
                "p99 ≤ 3x p50 at 32 connections, auth on",
                f"{_s(auth.get('p99_over_p50'), 1)}x (p50 {_s(auth['p50_ms'])}, p90 "
                f"{_s(auth.get('p90_ms'))}, p99 {_s(auth['p99_ms'])}, max "
                f"{_s(auth.get('max_ms'))} ms)",
                None if tail is None else tail <= 3.0,
            )
        )
    sts = figs.get("sts")
    if sts:
        es = sts["by_algorithm"].get("ES256")
        rate = _median(es["exchanges_per_sec"]) if es else None
        p50 = _median(sts["sequential_es256"]["p50_ms"])
        rows.append(
            (
                "3",
                "≥ 1,200 exchanges/s, default config (ES256), 32 connections",
                _s(es["exchanges_per_sec"], 0) if es else "n/a",
                None if rate is None else rate >= 1200,
            )
        )
        methods = sts.get("by_client_auth") or {}
        secret16 = methods.get("client_secret_basic_c16")
        secret1 = methods.get("client_secret_basic_c1")
        if secret16 and secret1:
            rate16 = _median(secret16["exchanges_per_sec"])
            p50_1 = _median(secret1["p50_ms"])
            rows.append(
                (
                    "3",
                    "≥ 2,500 exchanges/s, hop 1 with `client_secret_basic`, 2 threads × 16 "
                    "connections",
                    f"{_s(secret16['exchanges_per_sec'], 0)} "
                    f"({_s(secret16['server_cpu_us_per_request'], 0)} µs server CPU each)",
                    None if rate16 is None else rate16 >= 2500,
                )
            )
            rows.append(
                (
                    "3",
                    "p50 ≤ 1 ms at one connection, `client_secret_basic`",
                    f"{_s(secret1['p50_ms'])} ms",
                    None if p50_1 is None else p50_1 <= 1.0,
                )
            )
        rows.append(
            (
                "3",
                "p50 < 2 ms, one sequential client",
                f"{_s(sts['sequential_es256']['p50_ms'])} ms (server, wrk); "
                f"{_s(sts['client_sequential_es256']['p50_ms'])} ms (TokenExchangeClient)",
                None if p50 is None else p50 < 2.0,
            )
        )
    chain = figs.get("chain")
    if chain:
        warm = _median(chain["warm_hop_extra_ms_vs_open"])
        growth = chain["token_growth_bytes_per_hop"]
        slope = chain["token_growth_slope_bytes"]
        rows.append(
            (
                "4",
                "warm hop adds < 1 ms beyond an unauthenticated hop",
                f"{_s(chain['warm_hop_extra_ms_vs_open'])} ms per hop",
                None if warm is None else warm < 1.0,
            )
        )
        later = growth[1:] or growth
        rows.append(
            (
                "4",
                "token grows linearly, < 100 bytes per hop",
                f"fit {slope:.0f} B/hop; steps {', '.join(str(g) for g in growth)} B "
                "(the first exchange also adds `client_id`)",
                bool(later) and max(later) < 100 and max(later) - min(later) <= 8,
            )
        )
    memory = figs.get("memory")
    if memory:
        rows.append(
            (
                "5",
                f"bounds hold with {memory['items_per_round']:,} items per kind (bound "
                f"{memory['bound']:,})",
                f"RSS held {memory['rss_held_bytes'] / MIB:.1f} MiB; second round "
                f"{memory['rss_growth_second_round_bytes'] / MIB:+.1f} MiB",
                bool(memory["bounds_hold"]),
            )
        )
    abuse = figs.get("abuse")
    if abuse:
        default = abuse["variants"]["default limits"]
        ratio = _median(default["ratio"])
        rows.append(
            (
                "6",
                "exchange p50 under 4 attackers (bad credentials at /audit and /token) "
                "≤ 2x idle, default limits",
                f"{_s(default['ratio'])}x ({_s(default['exchange_p50_idle_ms'])} → "
                f"{_s(default['exchange_p50_attacked_ms'])} ms)",
                None if ratio is None else ratio <= 2.0,
            )
        )
    connections = figs.get("connections")
    if connections:
        p50 = connections["connection_exchange_ms"]["p50"]
        rows.append(
            (
                "7",
                "exchange for an already-connected third-party API, p50 at the service < 2 ms",
                f"{_f(p50, 3)} ms (agent exchange {_f(connections['agent_exchange_ms']['p50'], 3)}"
                " ms)",
                p50 < 2.0 and connections["bad_responses"] == 0,
            )
        )
    return rows


def _loads(item: dict[str, Any]) -> str:
    """The 1-minute load average before → after each repetition's run."""
    pairs = item.get("loadavg_1min") or []
    return ", ".join(f"{a:.1f}→{b:.1f}" for a, b in pairs) or "n/a"


# ----------------------------------------------------------------------------- charts


def _charts(results: dict[str, Any], out: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    figs = results["figures"]
    made: dict[str, str] = {}

    def save(name: str, draw: Callable[[Any], None]) -> None:
        fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
        draw(ax)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        made[name] = name

    def bars(ax: Any, labels: list[str], stats: list[dict[str, Any]], unit: str) -> None:
        med = [s["median"] or 0 for s in stats]
        lo = [m - (s["min"] or 0) for m, s in zip(med, stats, strict=True)]
        hi = [(s["max"] or 0) - m for m, s in zip(med, stats, strict=True)]
        ax.barh(labels, med, xerr=[lo, hi], color="#4477aa", capsize=3)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        for y, (m, s) in enumerate(zip(med, stats, strict=True)):
            ax.text(max(m, s["max"] or 0), y, f"  {m:,.0f}", va="center", fontsize=8)

    http = figs.get("http")
    if http:
        variants = http["variants"]
        keys = list(variants)

        def draw_http(ax: Any) -> None:
            bars(
                ax,
                [variants[k]["label"] for k in keys],
                [variants[k]["requests_per_sec"] for k in keys],
                "SendMessage requests/s (median, min–max), 32 connections",
            )
            ax.set_title("Figure 2: A2A SendMessage throughput, same run", fontsize=11)

        save("fig2_throughput.png", draw_http)
    sts = figs.get("sts")
    if sts:
        algs = list(sts["by_algorithm"])

        def draw_sts(ax: Any) -> None:
            bars(
                ax,
                algs,
                [sts["by_algorithm"][a]["exchanges_per_sec"] for a in algs],
                "one-hop token exchanges/s (median, min–max), 32 connections",
            )
            ax.axvline(1200, color="#cc3311", linestyle="--", label="target 1,200/s")
            ax.legend(loc="lower right")
            ax.set_title("Figure 3: token exchanges per second by algorithm", fontsize=11)

        save("fig3_sts.png", draw_sts)
    chain = figs.get("chain")
    if chain:

        def draw_chain(ax: Any) -> None:
            hops = [1, 2, 3, 4, 5]
            for mode, color in (("open", "#999999"), ("warm", "#4477aa"), ("cold", "#cc3311")):
                series = chain["latency_p50_ms"][mode]
                ax.plot(
                    hops,
                    [series[str(h)]["median"] for h in hops],
                    marker="o",
                    color=color,
                    label={"open": "no auth", "warm": "warm caches", "cold": "cold"}[mode],
                )
            ax.set_xlabel("agents in the chain (hops)")
            ax.set_ylabel("end-to-end p50 latency (ms)")
            ax.set_xticks(hops)
            ax2 = ax.twinx()
            ax2.bar(hops, chain["token_bytes_per_hop"], alpha=0.15, color="#228833")
            ax2.set_ylabel("token bytes received at hop (bars)")
            ax.legend(loc="upper left")
            ax.set_title("Figure 4: delegation chain latency and token size", fontsize=11)

        save("fig4_chain.png", draw_chain)
    verify = figs.get("verify")
    if verify:

        def draw_verify(ax: Any) -> None:
            bars(
                ax,
                [
                    "raw joserfc verify + claims",
                    "TokenVerifier, first seen",
                    "TokenVerifier, again",
                ],
                [
                    {k: (v * 1000 if isinstance(v, float) else v) for k, v in s.items()}
                    for s in (
                        verify["raw_joserfc_ms"],
                        verify["first_seen_ms"],
                        verify["seen_again_ms"],
                    )
                ],
                "microseconds per token (median, min–max)",
            )
            ax.set_title("Figure 1: verification cost per token", fontsize=11)

        save("fig1_verify.png", draw_verify)
    return made


# ----------------------------------------------------------------------------- markdown


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    mem = f"{m['memory_bytes'] / 1024**3:.1f} GiB" if m.get("memory_bytes") else "unknown"
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    load = m.get("loadavg_at_start")
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']} |",
        f"| cores | {m['cpu_count']} (usable: {m.get('cpu_affinity')}) |",
        f"| memory | {mem} |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python_implementation']} {m['python']} |",
        f"| load generator | {m.get('wrk') or 'wrk not installed'} |",
        f"| load average at start | {', '.join(f'{x:.2f}' for x in load) if load else 'n/a'} |",
        f"| packages | {pkgs} |",
    ]


def _profile_lines(title: str, profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    lines = [f"<details><summary>{title} ({profile['samples']} samples)</summary>", ""]
    lines += ["| inclusive % | frame |", "|---:|---|"]
    lines += [f"| {pct} | `{name}` |" for name, pct in profile["inclusive_percent"][:20]]
    lines += ["", "| self % | frame |", "|---:|---|"]
    lines += [f"| {pct} | `{name}` |" for name, pct in profile["self_percent"][:15]]
    lines += ["", "</details>", ""]
    return lines


def render(results: dict[str, Any], charts: dict[str, str]) -> str:
    figs = results["figures"]
    lines = ["# keycard-agents benchmarks", ""]
    if results.get("provisional"):
        lines += [
            "> **Provisional figures.** This run was taken while other work was running on "
            "the same machine; the absolute numbers are noisy. Ratios are paired run by run "
            "within the session and are the more robust read. Re-run on a quiet machine "
            "before quoting them.",
            "",
        ]
    lines += [
        f"- **Date:** {results['date']}",
        f"- **Command:** `{results['command']}` ({results['mode']} mode, "
        f"{results['wall_seconds']:.0f} s wall time)",
        f"- **Method:** {results['plan']['repetitions']} repetition(s) of every measurement, "
        f"{results['plan']['load_seconds_per_run']:g} s per load run, "
        f"{results['plan']['connections']} connections; figures are medians with [min – max] "
        "over the repetitions; ratios are computed per repetition (same run, paired) and "
        "then summarized. Servers: separate processes, uvicorn with one worker, on "
        "127.0.0.1; load from `wrk` (one thread) with a Lua script for POST bodies and "
        "headers; every response body is checked (a wrong answer counts as an error).",
        "",
        "## Machine",
        "",
        *_machine(results),
        "",
        "## Targets",
        "",
        "| figure | target | measured | verdict |",
        "|---|---|---|---|",
    ]
    for fig, target, measured, ok in targets(results):
        lines.append(f"| {fig} | {target} | {measured} | {_verdict(ok)} |")
    for name, why in results.get("skipped", {}).items():
        lines.append(f"| {name} | (skipped) | {why} | not measured |")
    for name, error in results.get("errors", {}).items():
        lines.append(f"| {name} | (failed) | `{error[:200]}` | not measured |")
    lines.append("")

    verify = figs.get("verify")
    http = figs.get("http")
    if verify or http:
        lines += ["## 1. Inbound authentication overhead", ""]
    if verify:
        lines += [
            f"Per token, ES256, {verify['tokens_per_rep']:,} tokens per repetition, in "
            "process (no HTTP):",
            "",
            "| what | ms per token | ratio to raw |",
            "|---|---:|---:|",
            f"| raw `joserfc` `jwt.decode` + `typ` + `JWTClaimsRegistry` (the floor) | "
            f"{_s(verify['raw_joserfc_ms'], 4)} | 1 |",
            f"| `TokenVerifier.verify`, token seen for the first time | "
            f"{_s(verify['first_seen_ms'], 4)} | {_s(verify['first_seen_vs_raw'])} |",
            f"| `TokenVerifier.verify`, token seen again (cache) | "
            f"{_s(verify['seen_again_ms'], 4)} | {_s(verify['seen_again_vs_raw'], 3)} |",
            "",
            "The cached path still checks, on every request: "
            + ", ".join(
                f"{k.replace('_', ' ')}: {'yes' if v else 'NO'}"
                for k, v in verify["checks"].items()
            )
            + ".",
            "",
        ]
        if "fig1_verify.png" in charts:
            lines += ["![verification cost](fig1_verify.png)", ""]
    if http:
        v = http["variants"]
        over = http["auth_overhead_ms_per_request"]
        lines += [
            "Under load (the figure 2 servers), our agent endpoint with authentication on and off:",
            "",
            "| | requests/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for key in ("keycard_noauth", "keycard_auth", "keycard_auth_fresh_tokens"):
            lines.append(
                f"| {v[key]['label']} | {_s(v[key]['requests_per_sec'], 0)} | "
                f"{_s(v[key]['p50_ms'])} | {_s(v[key]['p99_ms'])} |"
            )
        lines += [
            "",
            f"Authentication costs {_s(over['same_token'], 3)} ms of server time per request "
            f"with a token seen before and {_s(over['fresh_tokens'], 3)} ms with a new token "
            "on every request (1000/throughput on minus off, paired per repetition; one "
            "worker, so this is server time per request at saturation).",
            "",
            "## 2. A2A server throughput and latency",
            "",
            "`SendMessage` over JSON-RPC for a trivial echo skill, every server in the same "
            "run. Our server and the a2a-sdk server both create a task, add an artifact and "
            "complete it; the bare FastAPI endpoints only parse the JSON and answer a fixed "
            "task (the ceiling).",
            "",
            "| server | requests/s | p50 ms | p90 ms | p99 ms | max ms | p99/p50 | server CPU "
            "µs/request | bad | requests/s by repetition | load (1-min) by repetition |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for item in v.values():
            per_rep = ", ".join(f"{x:,.0f}" for x in item["requests_per_sec"]["runs"])
            lines.append(
                f"| {item['label']} | {_s(item['requests_per_sec'], 0)} | {_s(item['p50_ms'])} "
                f"| {_s(item.get('p90_ms'))} | {_s(item['p99_ms'])} | {_s(item.get('max_ms'))} "
                f"| {_s(item.get('p99_over_p50'), 1)} "
                f"| {_s(item.get('server_cpu_us_per_request'), 0)} | {item['bad_responses']} "
                f"| {per_rep} | {_loads(item)} |"
            )
        r = http["ratios"]
        lines += [
            "",
            "| ratio (paired per repetition) | value |",
            "|---|---:|",
            "| keycard-agents auth on / a2a-sdk no auth | "
            f"{_s(r['keycard_auth_vs_a2a_sdk_noauth'])} |",
            f"| keycard-agents auth on / a2a-sdk static bearer | "
            f"{_s(r['keycard_auth_vs_a2a_sdk_static_bearer'])} |",
            "| keycard-agents auth on / bare FastAPI + JWT | "
            f"{_s(r['keycard_auth_vs_fastapi_jwt'])} |",
            "| the same, by server CPU per request (FastAPI's / ours) | "
            f"{_s(r.get('keycard_auth_vs_fastapi_jwt_by_server_cpu'))} |",
            f"| keycard-agents auth on, new token per request / bare FastAPI + JWT | "
            f"{_s(r['keycard_auth_fresh_vs_fastapi_jwt'])} |",
            f"| keycard-agents auth on / auth off | {_s(r['keycard_auth_vs_keycard_noauth'])} |",
            f"| bare FastAPI + JWT / bare FastAPI | {_s(r['fastapi_jwt_vs_fastapi_bare'])} |",
            "",
        ]
        if "fig2_throughput.png" in charts:
            lines += ["![throughput](fig2_throughput.png)", ""]
        for kind, profile in (http.get("profiles") or {}).items():
            lines += _profile_lines(f"py-spy profile of the {kind} server under load", profile)
    sts = figs.get("sts")
    if sts:
        lines += [
            "## 3. Token service",
            "",
            f"One-hop RFC 8693 exchanges against `{sts['command']}`; every request carries a "
            "fresh `private_key_jwt` client assertion and is checked to return a token.",
            "",
            "| signing algorithm | exchanges/s (32 connections) | p50 ms | p99 ms | bad |",
            "|---|---:|---:|---:|---:|",
        ]
        for alg, item in sts["by_algorithm"].items():
            lines.append(
                f"| {alg}{' (default)' if alg == 'ES256' else ''} | "
                f"{_s(item['exchanges_per_sec'], 0)} | {_s(item['p50_ms'])} | "
                f"{_s(item['p99_ms'])} | {item['bad_responses']} |"
            )
        methods = sts.get("by_client_auth")
        if methods:
            lines += [
                "",
                "The hop-1 exchange by each way an agent authenticates, in the same pass "
                "(ES256): `private_key_jwt` (a fresh signed assertion per request) and "
                "`client_secret_basic` (a generated 256-bit secret, `sha256$` hash); wrk with "
                "2 threads × 16 connections, and with one connection:",
                "",
                "| client authentication | connections | exchanges/s | p50 ms | p90 ms | p99 ms "
                "| max ms | server CPU µs/exchange | bad | load (1-min) by repetition |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
            for key, item in methods.items():
                name, _, conns = key.rpartition("_c")
                lines.append(
                    f"| `{name}` | {conns} | {_s(item['exchanges_per_sec'], 0)} | "
                    f"{_s(item['p50_ms'])} | {_s(item['p90_ms'])} | {_s(item['p99_ms'])} | "
                    f"{_s(item['max_ms'])} | {_s(item['server_cpu_us_per_request'], 0)} | "
                    f"{item['bad_responses']} | {_loads(item)} |"
                )
            ratio = sts["client_auth_ratios"]["client_secret_basic_vs_private_key_jwt_c16"]
            lines += [
                "",
                f"`client_secret_basic` / `private_key_jwt` at 16 connections (paired per "
                f"repetition): {_s(ratio)}x.",
            ]
        seq = sts["sequential_es256"]
        cli = sts["client_sequential_es256"]
        lines += [
            "",
            "One sequential client (ES256):",
            "",
            "| client | exchanges/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
            f"| wrk, 1 connection (server latency) | {_s(seq['exchanges_per_sec'], 0)} | "
            f"{_s(seq['p50_ms'])} | {_s(seq['p99_ms'])} |",
            f"| `TokenExchangeClient` (signs its assertion, httpx, parses) | | "
            f"{_s(cli['p50_ms'])} | {_s(cli['p99_ms'])} |",
            "",
            "Delegated token size by algorithm (bytes): "
            + ", ".join(f"{a} {n}" for a, n in sts["delegated_token_bytes"].items())
            + ".",
            "",
        ]
        if "fig3_sts.png" in charts:
            lines += ["![token service](fig3_sts.png)", ""]
        lines += _profile_lines(
            "py-spy profile of the token service under load", sts.get("profile")
        )
    chain = figs.get("chain")
    if chain:
        lat = chain["latency_p50_ms"]
        lines += [
            "## 4. Delegation chain scaling",
            "",
            "End-to-end p50 latency (ms) of one request relayed through L agents (each its own "
            "process), with L-1 token exchanges; "
            f"{chain['requests_per_point']} requests per point per repetition.",
            "",
            "| hops | no auth | warm caches | cold (new user token) | token bytes at hop |",
            "|---:|---:|---:|---:|---:|",
        ]
        for h in range(1, 6):
            lines.append(
                f"| {h} | {_s(lat['open'][str(h)])} | {_s(lat['warm'][str(h)])} | "
                f"{_s(lat['cold'][str(h)])} | {chain['token_bytes_per_hop'][h - 1]} |"
            )
        slope = chain["ms_per_hop_slope"]
        lines += [
            "",
            f"Per added hop (least-squares slope over 1–5 hops): no auth {_s(slope['open'])} ms, "
            f"warm {_s(slope['warm'])} ms, cold {_s(slope['cold'])} ms. A warm hop adds "
            f"{_s(chain['warm_hop_extra_ms_vs_open'])} ms beyond an unauthenticated hop; a cold "
            f"one {_s(chain['cold_hop_extra_ms_vs_open'])} ms (an exchange plus a first "
            "verification at the next hop).",
            "",
            f"Token size grows by {', '.join(str(g) for g in chain['token_growth_bytes_per_hop'])} "
            f"bytes per hop (fit: {chain['token_growth_slope_bytes']:.0f} B/hop). The first "
            "exchange adds `client_id` and the first `act`; every later one adds one nested "
            "`act` level (`sub` and `iss` of the actor), so the step depends on the length of "
            "the agent ids and of the issuer URL.",
            "",
        ]
        if "fig4_chain.png" in charts:
            lines += ["![chain](fig4_chain.png)", ""]
    memory = figs.get("memory")
    if memory:
        r0, r1 = memory["rounds"]
        per_task = memory["ms_per_task_by_1000"]
        lines += [
            "## 5. Memory",
            "",
            f"One agent process: {memory['items_per_round']:,} finished tasks, "
            f"{memory['items_per_round']:,} verified tokens and {memory['items_per_round']:,} "
            f"exchanged tokens, every store bounded at {memory['bound']:,}; then the same "
            "again.",
            "",
            "| step | tasks held | verified tokens cached | exchanged tokens cached | RSS MiB |",
            "|---|---:|---:|---:|---:|",
            f"| start | 0 | 0 | 0 | {memory['rss_baseline'] / MIB:.1f} |",
        ]
        for name, rnd in (("first round", r0), ("second round", r1)):
            lines.append(
                f"| after {name} | {rnd['tasks_held']:,} | {rnd['verified_tokens_cached']:,} | "
                f"{rnd['exchanged_tokens_cached']:,} | {rnd['rss_after_exchanges'] / MIB:.1f} |"
            )
        lines += [
            "",
            f"Memory held by full stores: {memory['rss_held_bytes'] / MIB:.1f} MiB; growth "
            f"during the second round: {memory['rss_growth_second_round_bytes'] / MIB:+.1f} MiB. "
            f"Bounds hold: {'yes' if memory['bounds_hold'] else 'NO'}.",
            "",
            "Time per task through `TaskRuntime.send_message`, per 1,000 tasks (ms): "
            + ", ".join(f"{x:.3f}" for x in per_task)
            + ".",
            "",
        ]
    abuse = figs.get("abuse")
    if abuse:
        lines += [
            "## 6. Under attack",
            "",
            f"A legitimate exchange (`private_key_jwt`), one at a time, "
            f"{abuse['requests_per_phase']} per phase, against `{abuse['command']}`: first "
            f"idle, then while {abuse['attackers']} attacker clients loop bad credentials "
            "(junk admin tokens at `/audit`, wrong client secrets at `/token`). Hashes have "
            "the default scrypt cost. *No throttling* raises the per-source and per-account "
            "limits out of reach (an attacker spread over many addresses): only the bounded, "
            "off-loop hash pool protects the service then.",
            "",
            "| limits | exchange p50 idle ms | under attack ms | ratio | /jwks.json p50 idle "
            "→ attacked ms | attack requests/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, item in abuse["variants"].items():
            lines.append(
                f"| {name} | {_s(item['exchange_p50_idle_ms'])} | "
                f"{_s(item['exchange_p50_attacked_ms'])} | {_s(item['ratio'])}x | "
                f"{_s(item['jwks_p50_idle_ms'])} → {_s(item['jwks_p50_attacked_ms'])} | "
                f"{_s(item['attack_requests_per_sec'], 0)} |"
            )
        lines.append("")
    connections = figs.get("connections")
    if connections:
        lines += [
            "## 7. Exchange for a connected third-party API",
            "",
            f"{connections['requests_per_kind']} exchanges of each kind, one at a time, each "
            "with a fresh `private_key_jwt` assertion; time at the service (from the request "
            "reaching the ASGI app to the last byte of its answer). *Agent*: the service "
            "mints and signs a delegated token. *Connected API*: it opens the user's sealed "
            "vault record (AES-256-GCM) and returns the upstream token.",
            "",
            "| exchange for | p50 ms | p90 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for label, key in (("an agent", "agent"), ("a connected API", "connection")):
            stat = connections[f"{key}_exchange_ms"]
            lines.append(
                f"| {label} | {_f(stat['p50'], 3)} | {_f(stat['p90'], 3)} | {_f(stat['p99'], 3)} |"
            )
        lines.append("")
    if NOTES.exists():
        lines += [NOTES.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> Path:
    charts = _charts(results, out)
    path = out / "REPORT.md"
    path.write_text(render(results, charts), encoding="utf-8")
    return path


if __name__ == "__main__":
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results")
    data = json.loads((directory / "results.json").read_text(encoding="utf-8"))
    print(write_report(data, directory))
