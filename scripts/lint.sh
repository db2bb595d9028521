#!/usr/bin/env bash
# Formatting and static checks for the Rust code, the Dockerfile and the shell scripts.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "hadolint app/Dockerfile"
hadolint app/Dockerfile
log "shellcheck (every tracked shell script)"
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck -x "${scripts[@]}"
