#!/usr/bin/env bash
# Formatting and static checks for the Rust code, the Dockerfile and the shell scripts.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "hadolint app/Dockerfile"
hadolint app/Dockerfile
log "shellcheck"
shellcheck -x scripts/*.sh .ci/run
