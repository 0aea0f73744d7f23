#!/usr/bin/env bash
# The main job: install what is needed, build kiln, build the kernel and busybox packages with
# `kiln pkg build` (no Docker), build a system from them with `kiln build`, and boot it in qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -q
kiln=$PWD/target/release/kiln
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
if ! $kiln cache ls | grep -q '^docker.io/library/debian:bookworm'; then
  $kiln image import "$(bash scripts/base-image.sh)" debian:bookworm
fi
$kiln pkg build pkg/kernel pkg/busybox
kernel=$($kiln pkg show-tag pkg/kernel)
busybox=$($kiln pkg show-tag pkg/busybox)
$kiln image build -t kiln/hello-init --build-arg "BUSYBOX=$busybox" examples/hello-init
out=$(mktemp -d)
cat >"$out/hello.yml" <<YAML
kernel:
  image: $kernel
  cmdline: "console=ttyS0 quiet"
init:
  - kiln/hello-init
YAML
$kiln build -f kernel+initrd --name hello --dir "$out" "$out/hello.yml"
echo "booting it: kiln run qemu $out/hello"
timeout 300 "$kiln" run qemu --mem 512 --networking none "$out/hello" | tee "$out/console.log"
grep -q "Hello from kiln" "$out/console.log"
echo "built and booted: $out"
