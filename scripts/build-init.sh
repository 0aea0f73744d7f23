#!/usr/bin/env bash
# Build kiln-init as a static binary (glibc, static-pie) and put it where pkg/init's build.yml
# takes it from (extra-sources). Prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
cargo build -q --release -p kiln-init --target "$target" \
  --config "target.$target.rustflags=[\"-C\", \"target-feature=+crt-static\"]" \
  --config 'profile.release.strip="symbols"'
echo "$PWD/target/$target/release/kiln-init"
