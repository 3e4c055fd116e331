#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs and starts what the tests need
# (Postgres, Redis, Mailpit, moto, buf), then checks formatting, lints, the proto contract, and
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "services: Postgres and Redis"
eval "$(scripts/services.sh)"

step "gateway stand-ins: Mailpit (SMTP) and moto (Amazon SNS)"
eval "$(scripts/mailpit.sh)"
eval "$(scripts/moto.sh)"

step "tools: buf (npm)"
if [ ! -x node_modules/.bin/buf ]; then
  npm ci --no-audit --no-fund >&2
fi

step "format"
cargo fmt --all -- --check

step "proto lint"
node_modules/.bin/buf lint

step "clippy"
cargo clippy --all-targets --locked -- -D warnings
# The load harness and the bench-only courier sender exist only with the `bench` feature.
cargo clippy --all-targets --all-features --locked -- -D warnings

step "tests"
cargo test --all-targets --locked --no-fail-fast

step "tests: the load harness (bench feature)"
cargo test --locked --no-fail-fast --features bench --bin twofold-bench --test bench_harness
cargo test --locked --no-fail-fast --features bench --lib courier::gateways
