#!/usr/bin/env bash
# tokenwarden's performance benchmark: the one command.
#
#   bench/run.sh            full: release build, medians of several runs, writes BENCHMARKS.md
#                           (the figures between its markers; the text around them is kept)
#   bench/run.sh --smoke    seconds-long check for CI: dev profile, tiny sizes, one run each,
#                           every run still verified; writes target/bench-smoke/BENCHMARKS.smoke.md
#
# Other flags go to the driver: --skip-oidc, --out FILE, --work DIR.
# TOKENWARDEN_BIN=/path/to/tokenwarden measures that binary instead of building this checkout.
# Section 5 (the idle footprint side by side) also measures PIZAUTH_BIN=/path/to/pizauth (its
# commit named by PIZAUTH_COMMIT) and an earlier tokenwarden, TOKENWARDEN_BASE_BIN, when given.
# Section 6 (PostgreSQL beside SQLite) starts the distribution's PostgreSQL (/usr/lib/postgresql/*/bin,
# run as the postgres user, so the driver must run as root; scripts/test.sh installs it) on
# 127.0.0.1; without it that section is skipped with one line saying so.
# Section 7 (`--only api`: the token API over its unix socket beside `tokenwarden token` and
# `sqlite3` as a process per call) needs the sqlite3 command (Debian's `sqlite3` package); run as
# root, its clients run as `nobody`.
# Section 8 (`--only proxy`, run only when named: a `[[proxy]]` route beside nginx and direct, small
# GETs to an upstream in the driver on 127.0.0.1) needs Debian's `nginx` package (without it the
# section is skipped with one line saying so); nginx runs as a child with its own prefix. With
# Debian's `valgrind` package it also counts the route's and nginx's instructions per request.
# Needs Rust, Node 20 (the oidc-provider test server) and npm; nothing beyond the crates.io and npm
# registries. Generated databases (≈1 GB for 1M credentials) are cached in target/bench/templates
# (PostgreSQL's in the cluster target/bench/templates/pg-cluster).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

profile=release
for arg in "$@"; do
  [[ "$arg" == "--smoke" ]] && profile=dev
done
dir=$([[ "$profile" == dev ]] && echo debug || echo release)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if [[ -z "${TOKENWARDEN_BIN:-}" ]]; then
  cargo build --locked --quiet --profile "$profile" --bin tokenwarden
  TOKENWARDEN_BIN="$CARGO_TARGET_DIR/$dir/tokenwarden"
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    commit="$commit+uncommitted changes"
  fi
  export BENCH_COMMIT="${BENCH_COMMIT:-$commit}"
fi
export BENCH_PROFILE="${BENCH_PROFILE:-$profile}"
cargo build --locked --quiet --profile "$profile" --manifest-path bench/Cargo.toml

if [[ ! -d tests/oauth-server/node_modules ]]; then
  npm ci --prefix tests/oauth-server --no-audit --no-fund --loglevel=error
fi

exec "$CARGO_TARGET_DIR/$dir/tokenwarden-bench" --bin "$TOKENWARDEN_BIN" --repo "$ROOT" "$@"
