#!/usr/bin/env python3
"""Summarises taskwire-bench JSON lines: medians per label against the targets
of issue 8 (a Markdown table on stdout), the fan-out beside the no-database
reference (the `ref-*` labels, runs against bench/src/bin/fanout-baseline.rs), every
target's scenario beside the seed's design (the `seed-*` labels, runs against
bench/seed-node), the hostile-client scenarios of issue 19 (readflood,
tokenflood), and an SVG plot of fanout event latency percentiles against
the number of subscribers.

    python3 scripts/bench_report.py RESULTS.jsonl [--svg docs/benchmarks-fanout-latency.svg]

Only the Python standard library is used.
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                runs.append(json.loads(line))
    return runs


def get(run, path):
    v = run
    for k in path.split("."):
        if not isinstance(v, dict) or v.get(k) is None:
            return None
        v = v[k]
    return v


def med(runs, path):
    vals = [get(r, path) for r in runs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, unit="", digits=2):
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}f}{unit}" if isinstance(v, float) else f"{v:,}{unit}"


def all_clean(runs):
    return all(r.get("ok") for r in runs)


# label → (scenario text, target text, [(what, path, unit, limit, at_most)])
TARGETS = [
    ("fanout-100", "fanout N=100, R=200/s, W=1,000", "event p99 ≤ 1.2 ms, none lost",
     [("event p99", "event_latency_ms.p99", " ms", 1.2, True)]),
    ("fanout-1000", "fanout N=1,000, R=200/s, W=1,000", "event p99 ≤ 6 ms, none lost",
     [("event p99", "event_latency_ms.p99", " ms", 6.0, True)]),
    ("fanout-10000", "fanout N=10,000, R=10/s, W=200", "event p99 ≤ 100 ms, p50 ≤ 50 ms, none lost",
     [("event p99", "event_latency_ms.p99", " ms", 100.0, True),
      ("event p50", "event_latency_ms.p50", " ms", 50.0, True)]),
    ("writes-32", "writes C=32, 10 s, durable", "≥ 50,000 acked writes/s",
     [("acked/s", "acked_per_s", "/s", 50000.0, False)]),
    ("writes-1", "writes C=1, 10 s, durable", "≥ 4,000 acked writes/s",
     [("acked/s", "acked_per_s", "/s", 4000.0, False)]),
    ("conns-5000", "conns N=5,000", "≤ 12 KiB resident per socket; all connected in ≤ 0.5 s",
     [("RSS/socket", "server_rss_kib_per_socket", " KiB", 12.0, True),
      ("connected", "connected_s", " s", 0.5, True)]),
    ("resume-1000", "resume N=1,000, M=100", "every client caught up in ≤ 0.5 s",
     [("caught up", "caught_up_s", " s", 0.5, True)]),
]


def verdict(value, limit, at_most):
    if value is None:
        return "?"
    ok = value <= limit if at_most else value >= limit
    if ok:
        return "met"
    ratio = value / limit if at_most else limit / max(value, 1e-9)
    return f"missed ({ratio:.1f}× off)"


def targets_table(by_label):
    out = ["| scenario | target | runs | median figure | verdict | correctness |",
           "| --- | --- | --- | --- | --- | --- |"]
    for label, scenario, target, checks in TARGETS:
        runs = by_label.get(label, [])
        if not runs:
            out.append(f"| {scenario} | {target} | 0 | - | not run | - |")
            continue
        figs, verdicts = [], []
        for what, path, unit, limit, at_most in checks:
            v = med(runs, path)
            figs.append(f"{what} {fmt(v, unit)}")
            verdicts.append(verdict(v, limit, at_most))
        lost = sum(get(r, "lost") or 0 for r in runs)
        dup = sum(get(r, "duplicated") or 0 for r in runs)
        ooo = sum(get(r, "out_of_order") or 0 for r in runs)
        failed = sum(get(r, "failed_calls") or 0 for r in runs)
        correct = "all runs clean" if all_clean(runs) else "FAILED"
        if r_has(runs, "lost"):
            correct += f" (lost {lost}, dup {dup}, ooo {ooo})"
        if failed:
            correct += f", {failed} failed calls"
        out.append(f"| {scenario} | {target} | {len(runs)} | {'; '.join(figs)} | "
                   f"{'; '.join(verdicts)} | {correct} |")
    return "\n".join(out)


def reference_table(by_label):
    """taskwire's fan-out beside the no-database reference's, medians of runs:
    each `ref-X` label against `X`, run right after it on the same machine."""
    out = ["| fanout | taskwire event p50 / p99 | reference event p50 / p99 | p99 ratio | "
           "server CPU per event, taskwire / reference |",
           "| --- | --- | --- | --- | --- |"]
    pairs = [(label[len("ref-"):], label) for label in by_label if label.startswith("ref-")]
    pairs = [(ours, ref) for ours, ref in pairs if by_label.get(ours)]
    pairs.sort(key=lambda p: by_label[p[0]][0].get("subscribers") or 0)
    for ours, ref in pairs:
        a, b = by_label[ours], by_label[ref]
        r = a[0]
        scenario = f"N={r.get('subscribers'):,}, R={r.get('rate'):g}/s, W={r.get('writes'):,}"
        pa, pb = med(a, "event_latency_ms.p99"), med(b, "event_latency_ms.p99")
        ratio = f"{pa / pb:.2f}×" if pa and pb else "-"
        out.append(f"| {scenario} | {fmt(med(a, 'event_latency_ms.p50'))} / {fmt(pa)} ms | "
                   f"{fmt(med(b, 'event_latency_ms.p50'))} / {fmt(pb)} ms | {ratio} | "
                   f"{fmt(med(a, 'server_cpu_us_per_event'), '', 1)} / "
                   f"{fmt(med(b, 'server_cpu_us_per_event'), ' µs', 1)} |")
    return "\n".join(out) if pairs else None


def seed_table(by_label):
    """taskwire beside the seed's design (Node, ws, better-sqlite3 with group
    commit), medians of runs: each `seed-X` label against `X`, for the targets'
    scenarios. The better of the two is in bold."""
    out = ["| scenario | figure | taskwire | seed's design | taskwire's advantage |",
           "| --- | --- | --- | --- | --- |"]
    rows = 0
    for label, scenario, _target, checks in TARGETS:
        ours, seed = by_label.get(label), by_label.get("seed-" + label)
        if not ours or not seed:
            continue
        for what, path, unit, _limit, at_most in checks:
            a, b = med(ours, path), med(seed, path)
            if a is None or b is None:
                continue
            better = (a <= b) if at_most else (a >= b)
            adv = (b / a if at_most else a / b) if a and b else None
            fa, fb = fmt(a, unit), fmt(b, unit)
            fa, fb = (f"**{fa}**", fb) if better else (fa, f"**{fb}**")
            # A figure from a run that failed a correctness check says so.
            fa += "" if all_clean(ours) else " (FAILED a check)"
            fb += "" if all_clean(seed) else " (FAILED a check)"
            out.append(f"| {scenario} | {what} | {fa} | {fb} | "
                       f"{'-' if adv is None else f'{adv:.2f}×'} |")
            rows += 1
    return "\n".join(out) if rows else None


def labels_of(by_label, scenario):
    return sorted(label for label, runs in by_label.items() if runs[0].get("scenario") == scenario)


def ratio_text(v):
    return "-" if v is None else f"{v:.2f}×"


def pace_text(rate):
    return "unpaced" if rate is None else f"{rate:g}/s"


def readflood_table(by_label):
    """A writer's ack latency idle and under the read flood, medians of runs.
    The goal of issue 19: the flood's ack p99 within twice the idle one."""
    out = ["| label | runs | setup | ack p50 / p99, idle | ack p50 / p99, flood | flood p99 / idle p99 "
           "| runs within 2× | HTTP pages/s (200 / 429 per s) | socket resumes/s (ok / refused per s) "
           "| correctness |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    labels = labels_of(by_label, "readflood")
    for label in labels:
        runs = by_label[label]
        r = runs[0]
        within = sum(1 for x in runs if x.get("ack_p99_within_2x") is True)
        failed = sum(get(x, "failed_calls") or 0 for x in runs)
        correct = "all runs clean" if all_clean(runs) else "FAILED"
        if failed:
            correct += f", {failed} failed writes"
        out.append(
            f"| {label} | {len(runs)} | writer via {r.get('via')} at {r.get('write_rate'):g}/s; "
            f"flood {pace_text(r.get('http_rate'))} HTTP, {pace_text(r.get('ws_rate'))} socket; "
            f"{r.get('tasks'):,} tasks, {r.get('seconds'):g} s per phase | "
            f"{fmt(med(runs, 'idle_ack_p50_ms'))} / {fmt(med(runs, 'idle_ack_p99_ms'))} ms | "
            f"{fmt(med(runs, 'flood_ack_p50_ms'))} / {fmt(med(runs, 'flood_ack_p99_ms'))} ms | "
            f"{ratio_text(med(runs, 'ack_p99_ratio'))} | {within} of {len(runs)} | "
            f"{fmt(med(runs, 'http_flood.requests_per_s'), '', 0)} "
            f"({fmt(med(runs, 'http_flood.ok_per_s'), '', 0)} / {fmt(med(runs, 'http_flood.refused_per_s'), '', 0)}) | "
            f"{fmt(med(runs, 'ws_flood.requests_per_s'), '', 0)} "
            f"({fmt(med(runs, 'ws_flood.ok_per_s'), '', 0)} / {fmt(med(runs, 'ws_flood.refused_per_s'), '', 0)}) | "
            f"{correct} |")
    return "\n".join(out) if labels else None


def tokenflood_table(by_label):
    """One agent looping heartbeats beside dashboards, medians of runs. The
    goal: the dashboards stay connected and the agent is refused."""
    out = ["| label | runs | setup | agent calls/s | accepted/s | refused/s | dashboard events/s (all / each) "
           "| dashboards closed (1013), summed | runs meeting the goal | correctness |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    labels = labels_of(by_label, "tokenflood")
    for label in labels:
        runs = by_label[label]
        r = runs[0]
        closed = sum(get(x, "dashboards_closed") or 0 for x in runs)
        slow = sum(get(x, "dashboards_closed_1013") or 0 for x in runs)
        met = sum(1 for x in runs if x.get("goal_met") is True)
        correct = "all runs clean" if all_clean(runs) else "FAILED"
        lost = sum(get(x, "lost") or 0 for x in runs)
        if lost:
            correct += f" (lost {lost})"
        out.append(
            f"| {label} | {len(runs)} | {r.get('agent_sockets')} agent sockets, {r.get('dashboards')} dashboards, "
            f"{r.get('seconds'):g} s | {fmt(med(runs, 'agent_calls_per_s'), '', 0)} | "
            f"{fmt(med(runs, 'agent_accepted_per_s'), '', 0)} | {fmt(med(runs, 'agent_refused_per_s'), '', 0)} | "
            f"{fmt(med(runs, 'dashboard_events_per_s'), '', 0)} / {fmt(med(runs, 'dashboard_events_per_s_each'), '', 0)} | "
            f"{closed} ({slow}) | {met} of {len(runs)} | {correct} |")
    return "\n".join(out) if labels else None


def r_has(runs, key):
    return any(key in r for r in runs)


def details_table(by_label):
    out = ["| label | runs | figures (median) |", "| --- | --- | --- |"]
    for label in sorted(by_label):
        runs = by_label[label]
        s = runs[0].get("scenario")
        parts = []
        if s == "fanout":
            parts += [f"event p50/p90/p99/max {fmt(med(runs, 'event_latency_ms.p50'))}/"
                      f"{fmt(med(runs, 'event_latency_ms.p90'))}/{fmt(med(runs, 'event_latency_ms.p99'))}/"
                      f"{fmt(med(runs, 'event_latency_ms.max'))} ms",
                      f"ack p50/p99 {fmt(med(runs, 'ack_latency_ms.p50'))}/{fmt(med(runs, 'ack_latency_ms.p99'))} ms",
                      f"delivered {fmt(med(runs, 'delivered'))} of {fmt(med(runs, 'expected'))}",
                      f"server CPU {fmt(med(runs, 'server_cpu_us_per_event'), ' µs', 1)}/event",
                      f"mean batch {fmt(med(runs, 'server_metrics.mean_batch'))}",
                      f"mean commit {fmt(med(runs, 'server_metrics.mean_commit_ms'))} ms"]
            if r_has(runs, "fsync_paced"):
                parts.append(f"fsync at the writes' pace p50/p99 {fmt(med(runs, 'fsync_paced.p50_us'), '', 0)}/"
                             f"{fmt(med(runs, 'fsync_paced.p99_us'), ' µs', 0)}")
        elif s == "writes":
            parts += [f"{fmt(med(runs, 'acked_per_s'), '/s')}",
                      f"ack p50/p99 {fmt(med(runs, 'ack_latency_ms.p50'))}/{fmt(med(runs, 'ack_latency_ms.p99'))} ms",
                      f"fsync p50 {fmt(med(runs, 'fsync.p50_us'), ' µs')} → ceiling {fmt(med(runs, 'fsync.ceiling_writes_per_s'), '/s')}",
                      f"ratio to fsync ceiling {fmt(med(runs, 'ratio_to_fsync_ceiling'), '×')}",
                      f"ratio to single-writer ceiling (fsync + ping RTT) {fmt(med(runs, 'ratio_to_single_writer_ceiling'), '×')}",
                      f"server CPU {fmt(med(runs, 'server_cpu_us_per_write'), ' µs', 1)}/write",
                      f"mean batch {fmt(med(runs, 'server_metrics.mean_batch'))}",
                      f"mean commit {fmt(med(runs, 'server_metrics.mean_commit_ms'))} ms"]
        elif s == "conns":
            parts += [f"connected {fmt(med(runs, 'connected_s'), ' s', 3)}",
                      f"then subscribed {fmt(med(runs, 'subscribed_s'), ' s', 3)}",
                      f"RSS/socket {fmt(med(runs, 'server_rss_kib_per_socket'), ' KiB')}"]
        elif s == "resume":
            parts += [f"caught up {fmt(med(runs, 'caught_up_s'), ' s', 3)}",
                      f"reconnected {fmt(med(runs, 'all_reconnected_s'), ' s', 3)}",
                      f"per-client p50/p99 {fmt(med(runs, 'per_client_caught_up_ms.p50'))}/"
                      f"{fmt(med(runs, 'per_client_caught_up_ms.p99'))} ms",
                      f"server CPU {fmt(med(runs, 'cpu.server_cpu_s'), ' s')}"]
        elif s == "readflood":
            parts += [f"ack p99 idle/flood {fmt(med(runs, 'idle_ack_p99_ms'))}/{fmt(med(runs, 'flood_ack_p99_ms'))} ms",
                      f"ratio {ratio_text(med(runs, 'ack_p99_ratio'))}",
                      f"server CPU idle/flood {fmt(med(runs, 'idle.cpu.server_cpu_s'))}/"
                      f"{fmt(med(runs, 'flood.cpu.server_cpu_s'), ' s')}",
                      f"seeded in {fmt(med(runs, 'seed_s'), ' s')}"]
        elif s == "tokenflood":
            parts += [f"agent {fmt(med(runs, 'agent_calls_per_s'), '/s', 0)}",
                      f"dashboards {fmt(med(runs, 'dashboard_events_per_s'), ' events/s', 0)}",
                      f"server CPU {fmt(med(runs, 'cpu.server_cpu_s'), ' s')}"]
        parts.append("clean" if all_clean(runs) else "FAILED a check")
        out.append(f"| {label} | {len(runs)} | {'; '.join(parts)} |")
    return "\n".join(out)


def svg_plot(runs, path, rate=10.0, writes=200):
    """Median event latency p50/p90/p99/max against subscribers, log–log."""
    pts = defaultdict(list)
    for r in runs:
        if (r.get("scenario") == "fanout" and r.get("rate") == rate and r.get("writes") == writes
                and not (r.get("label") or "").startswith(("ref-", "seed-"))):
            pts[r["subscribers"]].append(r)
    ns = sorted(pts)
    if not ns:
        print(f"no fanout runs at rate {rate} with {writes} writes to plot", file=sys.stderr)
        return
    series = [("p50", "#1f77b4"), ("p90", "#2ca02c"), ("p99", "#ff7f0e"), ("max", "#d62728")]
    data = {k: [med(pts[n], f"event_latency_ms.{k}") for n in ns] for k, _ in series}
    W, H, L, R, T, B = 720, 440, 80, 130, 50, 60
    pw, ph = W - L - R, H - T - B
    xs = [math.log10(n) for n in ns]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    if x0 == x1:
        x1 += 1
    vals = [v for k in data for v in data[k] if v]
    y0 = math.floor(math.log10(max(min(vals), 1e-3)))
    y1 = math.ceil(math.log10(max(vals)))
    if y0 == y1:
        y1 += 1

    def X(n):
        return L + (math.log10(n) - x0) / (x1 - x0) * pw

    def Y(v):
        return T + ph - (math.log10(max(v, 10 ** y0)) - y0) / (y1 - y0) * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">taskwire fanout: event '
         f'latency vs subscribers ({writes} writes at {rate:g}/s, median of runs)</text>']
    for e in range(y0, y1 + 1):
        y = Y(10 ** e)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        label = f"{10 ** e:g}"
        o.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for n in ns:
        x = X(n)
        o.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#eee"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{n:,}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">subscribers '
             f'(sockets on topic "tasks")</text>')
    o.append(f'<text x="20" y="{T + ph / 2}" text-anchor="middle" '
             f'transform="rotate(-90 20 {T + ph / 2})">event latency, ms (log)</text>')
    for i, (k, color) in enumerate(series):
        p = [(X(n), Y(v)) for n, v in zip(ns, data[k]) if v is not None]
        o.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in p) + '"/>')
        for (x, y), v in zip(p, [v for v in data[k] if v is not None]):
            o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">'
                     f'<title>{k} {v:.2f} ms</title></circle>')
        ly = T + 20 + i * 22
        o.append(f'<line x1="{L + pw + 15}" y1="{ly}" x2="{L + pw + 40}" y2="{ly}" '
                 f'stroke="{color}" stroke-width="2"/>')
        o.append(f'<text x="{L + pw + 46}" y="{ly + 4}">{k}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
    rows = ", ".join(f"N={n}: " + "/".join(fmt(data[k][i]) for k, _ in series)
                     for i, n in enumerate(ns))
    print(f"wrote {path} (p50/p90/p99/max ms: {rows})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--svg", help="write the fanout latency plot here")
    ap.add_argument("--rate", type=float, default=10.0, help="fanout rate of the plotted runs")
    ap.add_argument("--writes", type=int, default=200, help="fanout writes of the plotted runs")
    a = ap.parse_args()
    runs = load(a.results)
    by_label = defaultdict(list)
    for r in runs:
        by_label[r.get("label") or r.get("scenario")].append(r)
    print("## Against the targets\n")
    print(targets_table(by_label))
    ref = reference_table(by_label)
    if ref:
        print("\n## Beside the no-database reference\n")
        print(ref)
    seed = seed_table(by_label)
    if seed:
        print("\n## Beside the seed's design\n")
        print(seed)
    for title, table in (("Read flood (issue 19)", readflood_table(by_label)),
                         ("Token flood (issue 19)", tokenflood_table(by_label))):
        if table:
            print(f"\n## {title}\n")
            print(table)
    print("\n## Every label\n")
    print(details_table(by_label))
    if a.svg:
        svg_plot(runs, a.svg, a.rate, a.writes)


if __name__ == "__main__":
    main()
