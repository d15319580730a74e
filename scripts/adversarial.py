#!/usr/bin/env python3
"""Attacks from issue #8 against a running `meridian demo --serve`, with the numbers they
produce: an out-of-range max_tokens, request bodies held open to balloon memory, and idle
admin connections. Usage: scripts/adversarial.py target/release/meridian [--rounds 3]."""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def post(host, port, key, body, extra=""):
    s = socket.create_connection((host, port), timeout=10)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    s.sendall(head.encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "connection closed, no response"


def held_bodies(host, port, key, n, pid):
    """n connections each send a 1 MiB body but its last byte; returns (answered early, peak RSS)."""
    socks, early, peak = [], 0, rss_mb(pid)
    body = b" " * (MIB - 1)
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                   f"Content-Length: {MIB}\r\n\r\n").encode())
        try:
            s.sendall(body)
        except OSError:
            early += 1  # the edge answered and closed while we were sending
        socks.append(s)
        peak = max(peak, rss_mb(pid))
    time.sleep(0.5)
    peak = max(peak, rss_mb(pid))
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(64).startswith(b"HTTP/1.1 503"):
                early += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    return early, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--held", type=int, default=300)
    a = ap.parse_args()
    cert_dir = tempfile.mkdtemp(prefix="meridian-adv-")
    proc = subprocess.Popen([a.binary, "demo", "--serve", "--json", "--listen", "127.0.0.1:0",
                             "--cert-dir", cert_dir], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        key = info["api_keys"]["acme"]
        host, port = info["http_url"][7:].rsplit(":", 1)
        port = int(port)
        ahost, aport = info["admin_url"][7:].rsplit(":", 1)
        pid = proc.pid
        print(f"edge pid {pid}, RSS at start {rss_mb(pid):.0f} MB")

        body = json.dumps({"model": "llama-3-8b", "messages": [{"role": "user", "content": "x"}],
                           "max_tokens": 1 << 62}).encode()
        print(f"max_tokens = 2^62: {post(host, port, key, body)}")

        for r in range(a.rounds):
            early, peak = held_bodies(host, port, key, a.held, pid)
            time.sleep(1.0)
            print(f"round {r + 1}: {a.held} HTTP/1.1 requests holding 1 MiB bodies: {early} answered "
                  f"503 at once, peak RSS {peak:.0f} MB, after close {rss_mb(pid):.0f} MB")

        idle = [socket.create_connection((ahost, int(aport))) for _ in range(1000)]
        t = time.monotonic()
        status = post(host, port, key, json.dumps({"model": "llama-3-8b", "messages": [
            {"role": "user", "content": "still there?"}]}).encode())
        print(f"1000 idle admin connections: process fds {fds(pid)}, a front-door request answered "
              f"`{status}` in {(time.monotonic() - t) * 1000:.0f} ms")
        for s in idle:
            s.close()
        return 0
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
