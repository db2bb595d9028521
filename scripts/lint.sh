#!/usr/bin/env bash
# Formatting and static checks for the Rust code, the Dockerfile and the shell scripts.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
# Advisories need the RustSec database from GitHub: the `cargo deny` job of ci.yaml checks them.
log "cargo deny check licenses bans sources (deny.toml)"
# Errors only: duplicate crate versions are warnings, listed in the CI job.
cargo deny --locked --log-level error check licenses bans sources
log "hadolint app/Dockerfile"
hadolint app/Dockerfile
log "shellcheck (every tracked shell script)"
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck -x "${scripts[@]}"
