#!/usr/bin/env bash
# Starts the examples/local topology as separate processes: ten workers and one edge on
# loopback. Ctrl-C stops them all (each drains gracefully on SIGTERM).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cargo build -q -p meridian-edge --manifest-path "$root/Cargo.toml"
bin="$root/target/debug/meridian"
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait; }
trap cleanup EXIT INT TERM
for cfg in "$here"/worker-*.toml; do
  "$bin" worker --config "$cfg" &
  pids+=($!)
done
"$bin" edge --config "$here/edge.toml" &
pids+=($!)
echo
echo "Send a prompt (in another terminal):"
echo "  cargo run -p meridian-protocol --example generate -- --edge 127.0.0.1:4433 \\"
echo "      --cert $here/certs/edge/cert.pem --area jp \"Hello from Tokyo\""
wait
