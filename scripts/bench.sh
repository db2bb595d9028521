#!/usr/bin/env bash
# `make bench`: installs wrk, valgrind and nginx (the peer), then runs the paired benchmark
# (scripts/bench.py --help).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install wrk util-linux valgrind nginx
"$ROOT/scripts/tools.sh"   # the static build's toolchain: musl targets, zig, cargo-zigbuild
exec python3 "$ROOT/scripts/bench.py" "$@"
