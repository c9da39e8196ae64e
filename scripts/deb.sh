#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (Cargo.toml, [package.metadata.deb]): the binaries, then
# the man pages, completions and packaged configuration into target/assets (tokenwarden-assets),
# the man pages gzipped as Debian wants them, then `cargo deb --no-build`.
#
#   scripts/deb.sh                      the real package: release profile (about 20 minutes on 2
#                                       cores), target/debian/tokenwarden_VERSION-1_ARCH.deb
#   scripts/deb.sh --dev --no-build --output DIR
#                                       the debug binaries a `cargo test` already built (what the
#                                       test suite packages, tests/it/deploy/debian.rs); never
#                                       ship that one
#
# cargo-deb: `cargo install cargo-deb --locked` (scripts/test.sh installs it when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=yes
output=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) profile=dev ;;
    --no-build) build=no ;;
    --output) output=$2; shift ;;
    *) echo "scripts/deb.sh: unknown argument $1 (see the comment at its top)" >&2; exit 2 ;;
  esac
  shift
done
bin_dir=target/$([ "$profile" = dev ] && echo debug || echo release)

if [ "$build" = yes ]; then
  cargo build --locked --profile "$profile" --bins
fi
rm -rf target/assets
"$bin_dir/tokenwarden-assets" target/assets
gzip -9n target/assets/man/*
mkdir -p "$output"
# A dev package is for the tests: quick compression rather than a small file.
fast=$([ "$profile" = dev ] && echo --fast || true)
cargo deb --no-build --locked --profile "$profile" --output "$output" --quiet $fast
