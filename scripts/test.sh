#!/usr/bin/env bash
# The project's test command (README "Run the tests"): format, lints, every test, the loom
# model checks and the docs. Run from anywhere; needs cargo, python3 (with venv), node/npm,
# redis-server and nsd (the last two installed with apt-get when missing and run as root), and
# network access to PyPI and npm for the SDK, schema and deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
jobs="${CARGO_BUILD_JOBS:-2}"

step() { printf '\n== %s\n' "$*"; }

# Real servers the tests start: redis-server (shared limits) and nsd (DNS discovery), from
# Debian's packages.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/nsd ] || command -v nsd >/dev/null 2>&1 || missing+=(nsd)
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy -j "$jobs" --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, property, integration, multi-process)"
cargo test -j "$jobs" --workspace --locked

step "loom model checks (lock-free routing table and counters)"
RUSTFLAGS="--cfg loom" cargo test -j "$jobs" --release --locked -p meridian-fabric \
  --target-dir target/loom --lib loom_

step "benches build (cargo bench --no-run: the crates with benches)"
cargo bench -j "$jobs" --locked --no-run -p meridian-protocol -p meridian-fabric

step "meridian-bench suite --quick (smoke: report complete and error-free; no timing checks)"
cargo build -j "$jobs" --locked -p meridian-edge -p meridian-bench
report="$(mktemp -d)/suite.json"
target/debug/meridian-bench suite --quick --json "$report"
python3 scripts/check_suite.py "$report"

step "official openai Python SDK against the HTTP front door"
python3 -m venv target/openai-venv
target/openai-venv/bin/pip install -q --disable-pip-version-check "openai>=1.40" "opentelemetry-proto>=1.20"
target/openai-venv/bin/python scripts/openai_sdk_test.py target/debug/meridian

step "OTLP trace export against the opentelemetry-proto schema"
target/openai-venv/bin/python scripts/otlp_trace_test.py target/debug/meridian

step "deployment packaging: Dockerfile, Kubernetes manifests and Helm chart (schema checks without a cluster)"
MERIDIAN_BIN=target/debug/meridian scripts/validate_deploy.sh

step "cargo doc -D warnings"
RUSTDOCFLAGS="-Dwarnings" cargo doc -j "$jobs" --workspace --no-deps --locked

printf '\nall checks passed\n'
