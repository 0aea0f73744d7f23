#!/usr/bin/env bash
# The main job: install what is needed, build kiln, and build an example system from LinuxKit
# manifests and images (kernel+initrd and tar), twice, checking the outputs are identical.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -q
kiln=target/release/kiln
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
conf=../shared/conformance/linuxkit
[ -d "$conf" ] || { echo "the example images live in ../shared/conformance/linuxkit, which is absent" >&2; exit 1; }
for img in "$conf"/images/*.tar; do $kiln cache import "$img" >/dev/null; done
out=$(mktemp -d)
(cd "$conf/01-minimal" && "$OLDPWD/$kiln" build --format kernel+initrd,tar --name minimal --dir "$out" manifest.yml)
(cd "$conf/01-minimal" && SOURCE_DATE_EPOCH=0 "$OLDPWD/$kiln" build --format kernel+initrd,tar --name again --dir "$out" manifest.yml) >/dev/null
for f in kernel initrd.img cmdline; do cmp "$out/minimal-$f" "$out/again-$f"; done
cmp "$out/minimal.tar" "$out/again.tar"
echo "built into $out (reproducible):"; ls -l "$out"
