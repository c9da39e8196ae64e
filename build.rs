//! Build script: links the release `tokenwarden` binary with the functions that a starting and
//! idle daemon runs placed side by side (`link/symbol-order.txt`, written by
//! `scripts/symbol-order.sh`), and its relative relocations packed (`-z pack-relative-relocs`), so
//! that far fewer pages of the executable are resident in the idle daemon (BENCHMARKS.md,
//! "Footprint, second pass"). Neither changes what the code does. Only for release builds for
//! x86_64 Linux (GNU), where rustc (≥ 1.90, Cargo.toml's rust-version is above it) links with its
//! LLD; elsewhere, or with `TOKENWARDEN_LINK_ORDER=0` in the build's environment, the binary links
//! as before.

use std::env;
use std::process::Command;

const ORDER: &str = "link/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=TOKENWARDEN_LINK_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").unwrap_or_default();
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let opted_out = env::var("TOKENWARDEN_LINK_ORDER").is_ok_and(|v| v == "0");
    // A build that chose its own linker flavour may not link with LLD, which alone knows the flag.
    let own_linker = rustflags.contains("linker-features") || rustflags.contains("linker-flavor");
    if !release || target != "x86_64-unknown-linux-gnu" || opted_out || own_linker {
        return;
    }
    let order = format!(
        "{}/{ORDER}",
        env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
    );
    // Without the file (a source tree that left it out) the binary links as before.
    if !std::path::Path::new(&order).is_file() {
        println!("cargo:warning={ORDER} is missing: the release binary is linked without it");
        return;
    }
    // Symbols the file names that this build does not have (another toolchain's hashes) are
    // skipped: a stale file costs resident pages, never a failed build.
    println!("cargo:rustc-link-arg-bin=tokenwarden=-Wl,--symbol-ordering-file={order}");
    println!("cargo:rustc-link-arg-bin=tokenwarden=-Wl,--no-warn-symbol-ordering");
    // DT_RELR needs glibc 2.36 where the binary runs; a binary linked against an older glibc
    // would not get the version requirement that makes an older loader refuse it.
    if host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=tokenwarden=-Wl,-z,pack-relative-relocs");
    }
}

/// The build host's glibc (`getconf GNU_LIBC_VERSION`, "glibc 2.36") is at least `major.minor`.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
