#!/usr/bin/env bash
# `make bench`: installs wrk, then runs the paired benchmark (scripts/bench.py --help).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install wrk util-linux
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
exec python3 "$ROOT/scripts/bench.py" "$@"
