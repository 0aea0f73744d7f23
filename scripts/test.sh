#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real registry, skopeo,
# Dockerfile builds against BuildKit's results, runc, qemu boots). Needs root (containers, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A fresh checkout compiles once: incremental state would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
