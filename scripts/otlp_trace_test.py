#!/usr/bin/env python3
"""Meridian's OTLP trace export, checked with the official OpenTelemetry protobuf schema.

Runs an OTLP/HTTP collector on loopback, starts `meridian demo --serve` with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at it, sends one chat completion through the HTTP front
door with a W3C `traceparent` header, and checks that:

* every export parses strictly (unknown fields are errors) as an `ExportTraceServiceRequest`
  of the `opentelemetry-proto` package;
* the edge's request span, its attempt span and the worker's span form one tree under the
  caller's span, in the caller's trace, from the right services;
* the admin `/metrics` counts the exported spans.

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
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
MODEL = "llama-3-8b"


class Collector(BaseHTTPRequestHandler):
    spans = []  # (service.name, span dict)
    errors = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            try:
                if self.path != "/v1/traces":
                    raise ValueError(f"POST to {self.path}, expected /v1/traces")
                if self.headers["content-type"] != "application/json":
                    raise ValueError(f"content-type {self.headers['content-type']}")
                json_format.Parse(body, ExportTraceServiceRequest())  # strict schema check
                for rs in json.loads(body)["resourceSpans"]:
                    attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                    service = attrs["service.name"]["stringValue"]
                    for ss in rs["scopeSpans"]:
                        self.spans.extend((service, s) for s in ss["spans"])
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
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
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
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "trace me"}]}).encode()
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
    by_name = {s["name"]: (svc, s) for svc, s in mine}
    assert set(by_name) == {"meridian.edge.request", "meridian.edge.attempt", "meridian.worker.generate"}, mine
    (edge_svc, request), (_, attempt), (worker_svc, worker) = (
        by_name["meridian.edge.request"], by_name["meridian.edge.attempt"], by_name["meridian.worker.generate"])
    assert (edge_svc, worker_svc) == ("meridian-edge", "meridian-worker"), (edge_svc, worker_svc)
    assert request["parentSpanId"] == PARENT, request
    assert attempt["parentSpanId"] == request["spanId"], (attempt, request)
    assert worker["parentSpanId"] == attempt["spanId"], (worker, attempt)
    assert (request["kind"], attempt["kind"], worker["kind"]) == (2, 3, 2)
    for s in (request, attempt, worker):
        assert len(s["spanId"]) == 16 and s["status"] == {}, s
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0, s
    attrs = {a["key"]: a["value"] for a in request["attributes"]}
    assert attrs["meridian.region"] == {"stringValue": "seoul"}, attrs
    assert attrs["meridian.tokens"] == {"intValue": "5"}, attrs

    while True:
        metrics = urllib.request.urlopen(f"{admin_url}/metrics", timeout=10).read().decode()
        line = next(l for l in metrics.splitlines() if l.startswith('meridian_trace_spans_total{outcome="exported"}'))
        if int(line.split()[-1]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert int(line.split()[-1]) >= 2, line
    print(f"ok   OTLP export: {len(Collector.spans)} spans parsed as ExportTraceServiceRequest; "
          f"edge request → attempt → worker under the caller's span; {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
