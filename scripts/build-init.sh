#!/usr/bin/env bash
# Build kiln-init as a static binary (glibc, static-pie) with the `guest` profile (small: see the
# workspace Cargo.toml) and put it where pkg/init's build.yml takes it from (extra-sources).
# Prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
cargo build -q --profile guest -p kiln-init --target "$target" \
  --config "target.$target.rustflags=[\"-C\", \"target-feature=+crt-static\"]"
echo "$PWD/target/$target/guest/kiln-init"
