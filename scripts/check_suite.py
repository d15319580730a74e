#!/usr/bin/env python3
"""Checks a `meridian-bench suite --json` report is complete and error-free.

No timing assertions: only that every row and field is present, every request succeeded,
and tokens flowed through both paths.
"""
import json
import sys

PCT = ("p50", "p90", "p99", "p999", "max")
RUN = ("requests", "errors", "tokens", "requests_per_s", "tokens_per_s", "ttft_ms", "itl_ms", "e2e_ms")


def check(path):
    with open(path) as f:
        report = json.load(f)
    problems = []
    rows = report.get("rows", [])
    if not rows:
        problems.append("no rows")
    for row in rows:
        c = row.get("concurrency")
        for key in ("concurrency", "direct", "edge", "edge_cpu_us_per_token", "edge_rss_kib_per_conn"):
            if key not in row:
                problems.append(f"row {c}: missing {key}")
        for side in ("direct", "edge"):
            run = row.get(side, {})
            for key in RUN:
                if key not in run:
                    problems.append(f"row {c} {side}: missing {key}")
            for key in ("ttft_ms", "itl_ms", "e2e_ms"):
                for p in PCT:
                    if p not in run.get(key, {}):
                        problems.append(f"row {c} {side}: missing {key}.{p}")
            if run.get("errors"):
                problems.append(f"row {c} {side}: errors {run['errors']}")
            if not run.get("requests") or not run.get("tokens"):
                problems.append(f"row {c} {side}: no completed requests or tokens")
    for p in problems:
        print(f"suite report: {p}", file=sys.stderr)
    print(f"suite report {path}: {len(rows)} rows, {'OK' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(check(sys.argv[1]))
