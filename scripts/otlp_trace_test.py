#!/usr/bin/env python3
"""Meridian's OTLP trace and metrics export, checked with the official OpenTelemetry
protobuf schema and the GenAI semantic conventions.

Runs an OTLP/HTTP collector on loopback, starts `meridian demo --serve` with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at it (metrics every 300 ms), sends one chat completion
through the HTTP front door with a W3C `traceparent` header, and checks that:

* every export parses strictly (unknown fields are errors) as an `ExportTraceServiceRequest`
  or `ExportMetricsServiceRequest` of the `opentelemetry-proto` package, and re-encodes to
  the same JSON (integers as strings, enums as numbers, camelCase);
* the edge's request span, its attempt span and the worker's span form one tree under the
  caller's span, in the caller's trace, from the right services, named
  `{gen_ai.operation.name} {gen_ai.request.model}` with the `gen_ai.*` attributes, and no
  attribute holds prompt or answer text;
* the metrics hold `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
  `gen_ai.server.time_per_output_token` and `gen_ai.client.token.usage` histograms with the
  conventions' bucket boundaries and consistent counts;
* the admin `/metrics` counts the exported spans and metric exports.

Run by scripts/test.sh in a venv with `opentelemetry-proto` installed:

    python scripts/otlp_trace_test.py target/debug/meridian
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
MODEL = "llama-3-8b"
PROMPT = "trace me, secret words"
DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TTFT_BOUNDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
TPOT_BOUNDS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]


def strict(body, message):
    """Parses `body` as `message` with unknown fields refused, and checks it re-encodes to the
    same JSON: OTLP's encoding rules (64-bit integers as strings, enums as numbers)."""
    msg = json_format.Parse(body, message)
    again = json_format.MessageToDict(msg, use_integers_for_enums=True)
    sent = json.loads(body)
    if again != sent:
        raise ValueError(f"not canonical OTLP JSON: first difference at {first_difference(sent, again)}")
    return msg


def first_difference(a, b, path="$"):
    """Where two JSON values first differ, as a path."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k} (only in {'sent' if k in a else 're-encoded'})"
            if a[k] != b[k]:
                return first_difference(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} vs {b!r}"


class Collector(BaseHTTPRequestHandler):
    spans = []  # (service.name, span dict)
    metrics = []  # the last ExportMetricsServiceRequest, as JSON
    errors = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            try:
                if self.headers["content-type"] != "application/json":
                    raise ValueError(f"content-type {self.headers['content-type']}")
                if self.path == "/v1/metrics":
                    strict(body, ExportMetricsServiceRequest())
                    Collector.metrics = json.loads(body)
                elif self.path == "/v1/traces":
                    json_format.Parse(body, ExportTraceServiceRequest())  # strict schema check
                    for rs in json.loads(body)["resourceSpans"]:
                        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                        service = attrs["service.name"]["stringValue"]
                        for ss in rs["scopeSpans"]:
                            self.spans.extend((service, s) for s in ss["spans"])
                else:
                    raise ValueError(f"POST to {self.path}, expected /v1/traces or /v1/metrics")
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(f"{type(e).__name__}: {e}")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def main(binary):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
               OTEL_METRIC_EXPORT_INTERVAL="300")
    env.pop("OTEL_SERVICE_NAME", None)
    cert_dir = tempfile.mkdtemp(prefix="meridian-otlp-")
    proc = subprocess.Popen(
        [binary, "demo", "--serve", "--json", "--listen", "127.0.0.1:0", "--ttft-ms", "2", "--itl-ms", "1",
         "--max-tokens", "5", "--cert-dir", cert_dir],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        started = json.loads(proc.stdout.readline())
        assert started["otlp_traces"] == f"{env['OTEL_EXPORTER_OTLP_ENDPOINT']}/v1/traces", started
        return run(started["http_url"], started["admin_url"], started["api_keys"]["acme"])
    finally:
        proc.terminate()
        proc.wait()
        server.shutdown()


def run(http_url, admin_url, key):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}).encode()
    req = urllib.request.Request(f"{http_url}/v1/chat/completions", data=body, headers={
        "content-type": "application/json", "x-meridian-area": "jp", "authorization": f"Bearer {key}",
        "traceparent": f"00-{TRACE}-{PARENT}-01"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.load(resp)
    assert answer["choices"][0]["finish_reason"] == "stop", answer

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with Collector.lock:
            mine = [(svc, s) for svc, s in Collector.spans if s["traceId"] == TRACE]
        if len(mine) >= 3:
            break
        time.sleep(0.1)
    assert not Collector.errors, Collector.errors
    name = f"chat {MODEL}"
    assert all(s["name"] == name for _, s in mine), [s["name"] for _, s in mine]
    request = next(s for svc, s in mine if svc == "meridian-edge" and s["kind"] == 2)
    attempt = next(s for svc, s in mine if svc == "meridian-edge" and s["kind"] == 3)
    worker = next(s for svc, s in mine if svc == "meridian-worker")
    assert request["parentSpanId"] == PARENT, request
    assert attempt["parentSpanId"] == request["spanId"], (attempt, request)
    assert worker["parentSpanId"] == attempt["spanId"], (worker, attempt)
    assert (request["kind"], attempt["kind"], worker["kind"]) == (2, 3, 2)
    for s in (request, attempt, worker):
        assert len(s["spanId"]) == 16 and s["status"] == {}, s
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0, s
    attrs = {a["key"]: a["value"] for a in request["attributes"]}
    assert attrs["meridian.region"] == {"stringValue": "seoul"}, attrs
    assert attrs["gen_ai.operation.name"] == {"stringValue": "chat"}, attrs
    assert attrs["gen_ai.provider.name"] == {"stringValue": "meridian"}, attrs
    assert attrs["gen_ai.request.model"] == {"stringValue": MODEL}, attrs
    assert attrs["gen_ai.usage.output_tokens"] == {"intValue": "5"}, attrs
    assert "gen_ai.usage.input_tokens" in attrs, attrs
    assert attrs["gen_ai.response.finish_reasons"]["arrayValue"]["values"][0]["stringValue"] in ("stop", "length")
    a = {x["key"]: x["value"] for x in attempt["attributes"]}
    assert a["server.address"] == {"stringValue": "127.0.0.1"} and "server.port" in a, a
    w = {x["key"]: x["value"] for x in worker["attributes"]}
    assert w["gen_ai.provider.name"] == {"stringValue": "meridian"}, w  # the synthetic backend
    # Content is never recorded: no attribute value carries the prompt or the answer.
    everything = json.dumps(mine)
    assert "secret words" not in everything, "the prompt leaked into a span"
    content = answer["choices"][0]["message"]["content"]
    assert len(content) < 12 or content not in everything, "the answer leaked into a span"

    check_metrics(deadline)

    while True:
        metrics = urllib.request.urlopen(f"{admin_url}/metrics", timeout=10).read().decode()
        line = next(l for l in metrics.splitlines() if l.startswith('meridian_trace_spans_total{outcome="exported"}'))
        if int(line.split()[-1]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert int(line.split()[-1]) >= 2, line
    exports = next(l for l in metrics.splitlines() if l.startswith('meridian_metric_exports_total{outcome="exported"}'))
    assert int(exports.split()[-1]) >= 1, exports
    assert 'gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="chat"' in metrics, "Prometheus has the GenAI families"
    print(f"ok   OTLP export: {len(Collector.spans)} spans parsed as ExportTraceServiceRequest; "
          f"edge request → attempt → worker under the caller's span, GenAI names and attributes; "
          f"metrics parsed as ExportMetricsServiceRequest with the GenAI histograms; {line}; {exports}")
    return 0


def check_metrics(deadline):
    """Waits for an export that holds the request, then checks the GenAI families."""
    want = {"gen_ai.server.request.duration": DURATION_BOUNDS, "gen_ai.server.time_to_first_token": TTFT_BOUNDS,
            "gen_ai.server.time_per_output_token": TPOT_BOUNDS, "gen_ai.client.token.usage": TOKEN_BOUNDS}
    while True:
        with Collector.lock:
            body = Collector.metrics
        metrics = {m["name"]: m for rm in (body or {}).get("resourceMetrics", [])
                   for sm in rm["scopeMetrics"] for m in sm["metrics"]}
        if all(metrics.get(n, {}).get("histogram", {}).get("dataPoints") for n in want) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not Collector.errors, Collector.errors
    resource = {a["key"]: a["value"] for a in body["resourceMetrics"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "meridian-edge"}, resource
    for name, bounds in want.items():
        m = metrics[name]
        assert m["unit"] == ("{token}" if name.endswith("usage") else "s"), m
        h = m["histogram"]
        assert h["aggregationTemporality"] == 2, h  # cumulative
        for p in h["dataPoints"]:
            assert p["explicitBounds"] == bounds, (name, p["explicitBounds"])
            assert len(p["bucketCounts"]) == len(bounds) + 1, p
            assert sum(int(c) for c in p["bucketCounts"]) == int(p["count"]) >= 1, p
            attrs = {a["key"]: a["value"]["stringValue"] for a in p["attributes"]}
            assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == MODEL, attrs
            assert attrs["gen_ai.provider.name"] == "meridian", attrs
            assert attrs["meridian.region"] == "seoul", attrs
    usage = {a["value"]["stringValue"] for p in metrics["gen_ai.client.token.usage"]["histogram"]["dataPoints"]
             for a in p["attributes"] if a["key"] == "gen_ai.token.type"}
    assert usage == {"input", "output"}, usage
    assert metrics["meridian.requests"]["sum"]["isMonotonic"] is True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
