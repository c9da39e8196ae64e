#!/usr/bin/env bash
# Writes link/symbol-order.txt, the link order build.rs gives the release binary: the functions of
# `tokenwarden` that a daemon runs, as valgrind's callgrind sees them (mangled, as the linker knows
# them), in three traces:
#   1. start to idle: open and migrate an empty SQLite database, one sweep with nothing due, a
#      second of idle, SIGTERM;
#   2. a sweep that refreshes: 20 credentials imported with `tokenwarden add`, refreshed against
#      the benchmark's instant token endpoint on 127.0.0.1 (`tokenwarden-bench serve`; plain HTTP,
#      so TLS code is not in it), then idle and SIGTERM;
#   3. a `[[proxy]]` route's requests: 200 GETs with curl over two keep-alive connections, to the
#      same endpoint as the route's upstream (needs curl and python3).
# The first trace's functions come first, then the second's, then the third's. Placed side by side
# they fill ≈ 3 MB of the executable's text instead of being spread over all of it (BENCHMARKS.md,
# "Footprint, second pass"). Run it after a toolchain or dependency upgrade (symbol hashes change
# with them; a stale file costs resident pages, never a failed build; benchmark section 5 says when
# it is stale) and commit the file.
#
#   scripts/symbol-order.sh        needs valgrind (Debian's `valgrind`); ≈ 2 minutes after the builds
#   TOKENWARDEN_BIN=/path/to/tokenwarden scripts/symbol-order.sh
#                                  traces that release build instead of building this checkout
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
command -v valgrind >/dev/null || { echo "symbol-order: needs valgrind (Debian's valgrind package)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -n "${TOKENWARDEN_BIN:-}" ]]; then
  bin="$(realpath "$TOKENWARDEN_BIN")"
else
  cargo build --locked --quiet --release --bin tokenwarden
  bin="$(realpath "$CARGO_TARGET_DIR/release/tokenwarden")"
fi
cargo build --locked --quiet --release --manifest-path bench/Cargo.toml
endpoint_bin="$CARGO_TARGET_DIR/release/tokenwarden-bench"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# The daemon reads TOKENWARDEN_* as settings: none of ours may reach it.
unset TOKENWARDEN_BIN
export SYMBOL_ORDER_SECRET=unused-secret

# config NAME TOKEN_URL [SCHEDULE LINES]: a configuration in $work/NAME.toml.
config() {
  cat > "$work/$1.toml" <<CONF
database = "$work/$1.db"
$3

[providers.example]
token_url = "$2"
client_id = "symbol-order"
client_secret_env = "SYMBOL_ORDER_SECRET"
CONF
}

# trace NAME [COMMAND…]: callgrind the daemon on $work/NAME.toml until its first sweep has
# finished and a second more (and COMMAND has run, when given), then SIGTERM; its functions in
# $work/NAME.fns.
trace() {
  local log="$work/$1.log" pid
  valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$work/$1.callgrind" \
    "$bin" --config "$work/$1.toml" run </dev/null >/dev/null 2>"$log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 1200); do
    grep -q 'sweep finished' "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "symbol-order: the daemon ($1) exited early:" >&2; grep -v '^==' "$log" | tail -3 >&2; exit 1; }
    sleep 0.1
  done
  grep -q 'sweep finished' "$log" || { echo "symbol-order: no sweep within 120 s ($1)" >&2; exit 1; }
  sleep 1
  local name=$1
  shift
  if (($#)); then "$@" || { echo "symbol-order: $* failed ($name)" >&2; exit 1; }; fi
  set -- "$name"
  kill -TERM "$pid"
  wait "$pid" || true
  # Functions (fn=) of objects (ob=) that are our binary; callgrind marks recursion as name'N and
  # names what has no symbol by its address (0x…) or "(below main)".
  awk -v bin="$bin" '
    /^ob=/ { ob = substr($0, 4) }
    /^fn=/ { if (ob == bin && $0 !~ /^fn=(0x|\()/) { f = substr($0, 4); sub(/'"'"'[0-9]+$/, "", f); print f } }
  ' "$work/$1.callgrind" > "$work/$1.fns"
  [[ -s "$work/$1.fns" ]] || { echo "symbol-order: callgrind saw no function of $bin ($1)" >&2; exit 1; }
}

# 1. Start to idle, nothing due.
config idle "http://127.0.0.1:9/token" $'schedule = "0 0 1 * *"\nrefresh_margin = "40d"\nmax_idle = "60d"'
trace idle

# 2. A sweep that refreshes 20 credentials (the default schedule).
"$endpoint_bin" serve 300 < <(sleep 300) > "$work/endpoint.out" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do [[ -s "$work/endpoint.out" ]] && break; sleep 0.1; done
token_url="$(head -1 "$work/endpoint.out")"
[[ "$token_url" == http://127.0.0.1:* ]] || { echo "symbol-order: the token endpoint did not start" >&2; exit 1; }
config refresh "$token_url" ""
for i in $(seq 1 20); do
  echo "symbol-order-refresh-token-$i" |
    "$bin" --config "$work/refresh.toml" add --provider example "cred-$i" >/dev/null
done
trace refresh
grep -q 'refreshed=20 ' "$work/refresh.log" || { echo "symbol-order: the refresh trace did not refresh its 20 credentials" >&2; exit 1; }

# 3. A proxy route's requests (a [[proxy]] route to the same endpoint as its upstream: what it
#    answers a GET does not matter, but for a 401), one keep-alive connection, then another.
command -v curl >/dev/null || { echo "symbol-order: needs curl" >&2; exit 1; }
route_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
config proxy "$token_url" ""
cat >> "$work/proxy.toml" <<CONF

[[proxy]]
listen = "127.0.0.1:$route_port"
credential = "cred-1"
upstream = "${token_url%/token}"
CONF
echo "symbol-order-refresh-token-1" | "$bin" --config "$work/proxy.toml" add --provider example cred-1 >/dev/null
route_requests() {
  for _ in 1 2; do
    curl -s -o /dev/null --max-time 60 "http://127.0.0.1:$route_port/v1/ping?n=[1-100]"
  done
}
trace proxy route_requests

cat "$work/idle.fns" "$work/refresh.fns" "$work/proxy.fns" | awk '!seen[$0]++' > "$work/order.txt"
mv "$work/order.txt" link/symbol-order.txt
echo "symbol-order: link/symbol-order.txt names $(wc -l < link/symbol-order.txt) functions ($(awk '!s[$0]++' "$work/idle.fns" | wc -l) from start to idle)"
