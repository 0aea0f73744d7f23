#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real registry, skopeo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
