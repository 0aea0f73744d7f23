#!/usr/bin/env bash
# The main job: install what is needed, build kiln and kiln-init, build examples/minimal.yml
# (kiln-init and a shell on the console; `kiln build` builds the kernel, init, getty and busybox
# packages it names, with no Docker), and boot it in qemu. On a terminal you get the shell (leave
# with `poweroff -f`); otherwise a scripted session types a command and powers off.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -q
bash scripts/build-init.sh >/dev/null
kiln=$PWD/target/release/kiln
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
if ! $kiln cache ls | grep -q '^docker.io/library/debian:bookworm'; then
  $kiln image import "$(bash scripts/base-image.sh)" debian:bookworm
fi
out=$(mktemp -d)
$kiln build -f kernel+initrd --name minimal --dir "$out" examples/minimal.yml
echo "booting it: kiln run qemu $out/minimal"
if [ -t 0 ]; then
  exec "$kiln" run qemu "$out/minimal"
fi
{ sleep 20; echo 'echo "kiln says $((6*7)) from $(hostname), kernel $(uname -r)"'
  echo 'ip -4 addr show eth0; /run/kiln/kiln-ctl list'; sleep 5; echo 'poweroff -f'; sleep 30; } \
  | timeout 300 "$kiln" run qemu "$out/minimal" | tee "$out/console.log"
grep -q "kiln says 42 from kiln" "$out/console.log"
echo "built and booted: $out"
