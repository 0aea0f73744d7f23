# Sourced by the benchmarks that run kiln on a warm store of their own: installs what kiln needs,
# builds the release kiln and kiln-init, and sets `kiln` (the binary), KILN_CACHE (default
# ~/.cache/kiln-bench), `work` (a scratch directory removed on exit) and the Debian base image
# in that store.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --release -q -p kiln
bash scripts/build-init.sh >/dev/null
kiln=$PWD/target/release/kiln
export KILN_CACHE=${KILN_CACHE:-$HOME/.cache/kiln-bench}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if ! $kiln cache ls | grep -q debian:bookworm; then
  $kiln image import "$(bash scripts/base-image.sh)" debian:bookworm >/dev/null
fi
