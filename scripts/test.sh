#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs and starts what the tests need
# (Postgres, Redis, Mailpit, moto, Chromium, npm and Go dependencies), then checks formatting,
# lints, doc links, the proto contract and the generated SDKs, and runs every test: Rust, the
# TypeScript and Go SDKs against a real server, and the sign-in page in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# A run from a clean clone compiles each crate once, so incremental compilation's caches (2.3 GiB
# of the 8.4 GiB such a run left in target/) only fill the disk; one CI machine ran out. A value
# already set, such as a developer's CARGO_INCREMENTAL=1 for quick reruns, is kept.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# `eval "$(script)"` would go on after a failed script (eval of nothing succeeds), so each
# script's output is captured first, where `set -e` sees its failure.
start_service() {
  local exports
  exports="$("$@")"
  eval "$exports"
}

step "services: Postgres and Redis"
start_service scripts/services.sh

step "gateway stand-ins: Mailpit (SMTP) and moto (Amazon SNS)"
start_service scripts/mailpit.sh
start_service scripts/moto.sh

step "browser: Debian's Chromium"
start_service scripts/chromium.sh

step "tools: npm workspace (buf, protoc-gen-es, the TypeScript SDK and the sign-in page)"
npm ci --no-audit --no-fund >&2

step "format"
cargo fmt --all -- --check

step "proto lint"
node_modules/.bin/buf lint

step "generated SDK code matches proto/"
scripts/generate.sh --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings
# The load harness and the bench-only courier sender exist only with the `bench` feature.
cargo clippy --all-targets --all-features --locked -- -D warnings

step "doc links"
# Private items too: most of the crate's doc comments are on them, and a broken link there is as
# misleading as anywhere.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --all-features --locked

step "tests"
cargo test --all-targets --locked --no-fail-fast

# The SDK and browser tests start the server binary the step above built, without the bench
# feature, as operators run it. A `cargo build` of its own would differ from it only in tokio's
# `test-util` feature (a dev-dependency's, which `cargo test` unifies into its build) and would
# compile tokio and everything built on it a second time, about 0.6 GiB and minutes. So they run
# before the bench feature's tests, whose build replaces the binary.
export TWOFOLD_BIN="$PWD/target/debug/twofold"

step "tests: TypeScript SDK against a real server (gRPC and grpc-web)"
npm test -w @twofold/sdk

step "tests: Go SDK against a real server"
(
  cd sdks/go
  unformatted="$(gofmt -l .)"
  if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
  go vet ./...
  # -count=1: the tests run the server binary, which Go's test cache does not see, so a cached
  # pass could stand for a server that has changed since.
  go test -count=1 ./...
)

step "tests: the sign-in page in headless Chromium (screenshots in ui/e2e/artifacts)"
npm test -w @twofold/ui

step "tests: the load harness (bench feature)"
cargo test --locked --no-fail-fast --features bench --bin twofold-bench --test bench_harness
cargo test --locked --no-fail-fast --features bench --lib courier::gateways

step "docs: the latest benchmark set's tables are its files' figures"
# A new set printed by scripts/bench-set.sh and kept in docs/performance/ takes this name's place.
scripts/bench-summary.py docs/performance after33 --check docs/performance.md
scripts/bench-summary.py docs/performance after33b --check docs/performance.md
scripts/bench-summary.py docs/performance after33c --check docs/performance.md
scripts/bench-summary.py docs/performance after33d --check docs/performance.md
scripts/bench-summary.py docs/performance after34 --check docs/performance.md
# The earliest set, before the harness measured pauses: its tables still print, with "-" there.
scripts/bench-summary.py docs/performance after2 | grep '^| Postgres + Redis | .* | - | ' >/dev/null
# A run of `WhoAmI` alone is not a set: said so, and no tables of dashes.
status=0
scripts/bench-summary.py docs/performance before-70pct-whoami >/dev/null 2>&1 || status=$?
[ "$status" = 2 ] || { echo "bench-summary took a WhoAmI run for a set (exit $status)" >&2; exit 1; }
