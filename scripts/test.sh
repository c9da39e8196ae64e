#!/usr/bin/env bash
# Runs every test: installs the test OAuth server's npm packages from its lock file, then the whole
# cargo test suite (unit tests, and integration tests that run the real binary against it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "scripts/test.sh: installing Node.js and npm (the test OAuth server needs them)" >&2
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/oauth-server --no-audit --no-fund --loglevel=error

cargo test --locked --all-targets "$@"
