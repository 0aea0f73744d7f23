#!/usr/bin/env bash
# Build kiln-init as a static binary (glibc, static-pie) with the `guest` profile (small: see the
# workspace Cargo.toml) for each architecture kiln builds systems for, and put them where
# pkg/init's build.yml takes them from (extra-sources). Prints their paths.
#   build-init.sh [ARCH...]   ARCH: amd64, arm64 (default: both)
# The machine's own architecture is built with the Rust toolchain on PATH; another one is
# cross-compiled with Debian's (rustc-web with libstd-rust-web-dev:ARCH, and gcc for that
# architecture: see scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(uname -m)
[ $# -gt 0 ] || set -- amd64 arm64
for arch in "$@"; do
  case "$arch" in
    amd64 | x86_64) machine=x86_64 ;;
    arm64 | aarch64) machine=aarch64 ;;
    *) echo "build-init.sh: kiln-init is built for amd64 and arm64, not $arch" >&2; exit 2 ;;
  esac
  target="$machine-unknown-linux-gnu"
  flags=(--config "target.$target.rustflags=[\"-C\", \"target-feature=+crt-static\"]")
  if [ "$machine" = "$host" ]; then
    cargo build -q --profile guest -p kiln-init --target "$target" "${flags[@]}"
  else
    linker="$machine-linux-gnu-gcc"
    for tool in /usr/bin/cargo /usr/bin/rustc "$linker"; do
      command -v "$tool" >/dev/null || {
        echo "build-init.sh: $tool is missing to cross-compile kiln-init for $arch: run scripts/install-deps.sh" >&2
        exit 1
      }
    done
    RUSTC=/usr/bin/rustc /usr/bin/cargo build -q --profile guest -p kiln-init --target "$target" \
      "${flags[@]}" --config "target.$target.linker=\"$linker\""
  fi
  echo "$PWD/target/$target/guest/kiln-init"
done
