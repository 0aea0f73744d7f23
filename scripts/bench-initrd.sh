#!/usr/bin/env bash
# Benchmark `kiln build -f kernel+initrd` on an input like the ones LinuxKit users build: Debian's
# kernel (pkg/kernel, built by `kiln pkg build`), busybox as init, a debootstrap image
# (scripts/base-image.sh, imported with `kiln image import`) used by two containers, and a small
# service image. "before" is kiln at BENCH_BASE_REV (default d445df5, the last revision that
# wrote the initrd as one compressed stream), built from `git archive` in a scratch directory
# with its own target directory (or the binary BENCH_BASE_KILN names); "after" is the working
# tree. Both run in this one run, on the same store, interleaved (the machine is shared:
# compare ratios); each figure is the median of BENCH_ROUNDS (default 3) runs:
#
#   full      warm image store (with the layer indexes an earlier build kept), nothing of the
#             initrd cached
#   no index  full, without the layer indexes either: the first build after a pull or import
#   again     the same build again: every initrd segment cached ("after" only)
#   changed   after the small service image changed (a new version each time)
#   1 core    `taskset -c 0`; the initrd must be identical to the one of `taskset -c 0,1`
#   zstd      full, with --compress zstd
#   lz4       full, with --compress lz4 ("after" only: "before" cannot write it)
#   peak RSS  /usr/bin/time's maximum resident set size (largest of the rounds)
#
# On a shared machine, BENCH_WAIT_IDLE=1 waits before each build until the CPUs are idle.
# Figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/install-deps.sh >/dev/null
cargo build --release -q -p kiln
after=$root/target/release/kiln
base_tar=$(bash scripts/base-image.sh)
work=$(mktemp -d /tmp/kiln-bench-initrd.XXXXXX)
trap 'rm -rf "$work"' EXIT
rounds=${BENCH_ROUNDS:-3}

before=${BENCH_BASE_KILN:-}
if [ -z "$before" ]; then
  rev=${BENCH_BASE_REV:-d445df5}
  mkdir "$work/base"
  git archive --format=tar "$rev" | tar -x -C "$work/base"
  echo "building kiln at $rev (before) ..." >&2
  (cd "$work/base" && CARGO_TARGET_DIR="$work/base-target" cargo build --release -q -p kiln)
  before=$work/base-target/release/kiln
fi

export KILN_CACHE=$work/store
$after image import "$base_tar" debian:bookworm >/dev/null
echo "building pkg/kernel and pkg/busybox ..." >&2
$after pkg build pkg/kernel pkg/busybox >"$work/pkgs" 2>"$work/pkg.log" || { cat "$work/pkg.log" >&2; exit 1; }
mapfile -t pkgs <"$work/pkgs"
kernel=${pkgs[0]} busybox=${pkgs[1]}
mkdir -p "$work/app"
printf 'FROM %s\nCOPY app.txt /srv/app.txt\nCMD ["/bin/cat", "/srv/app.txt"]\n' "$busybox" >"$work/app/Dockerfile"
version=0
new_app() {
  version=$((version + 1))
  echo "app version $version" >"$work/app/app.txt"
  $after image build -t bench/app:1 "$work/app" >/dev/null 2>&1
}
new_app
cat >"$work/bench.yml" <<YML
kernel:
  image: $kernel
  cmdline: console=ttyS0
init:
  - $busybox
onboot:
  - name: setup
    image: debian:bookworm
    command: ["/bin/true"]
services:
  - name: shell
    image: debian:bookworm
  - name: app
    image: bench/app:1
YML
$after build -f tar -o "$work/rootfs.tar" "$work/bench.yml" >/dev/null
rootfs=$(stat -c %s "$work/rootfs.tar")
rm -f "$work/rootfs.tar"

segments=$KILN_CACHE/initrd-segments
# Wait (at most 15 minutes) until the CPUs have been at least 90% idle for two seconds.
wait_idle() {
  [ -n "${BENCH_WAIT_IDLE:-}" ] || return 0
  local end=$((SECONDS + 900)) calm=0 u n s i w a ai b bi
  while [ $SECONDS -lt $end ] && [ $calm -lt 2 ]; do
    read -r _ u n s i w _ </proc/stat; a=$((u + n + s + i + w)) ai=$i
    sleep 1
    read -r _ u n s i w _ </proc/stat; b=$((u + n + s + i + w)) bi=$i
    if [ $(((bi - ai) * 100 / (b - a))) -ge 90 ]; then calm=$((calm + 1)); else calm=0; fi
  done
}
declare -A walls rss size
# run LABEL KILN [CPUS] [COMPRESSION]: one build into $work/out, recorded under LABEL.
run() {
  local label=$1 kiln=$2 cpus=${3:-} compress=${4:-gzip} pre=()
  [ -n "$cpus" ] && pre=(taskset -c "$cpus")
  rm -rf "$work/out"
  wait_idle
  /usr/bin/time -f "%e %M" -o "$work/time" "${pre[@]}" "$kiln" build -f kernel+initrd \
    --compress "$compress" --name sys --dir "$work/out" "$work/bench.yml" >/dev/null
  local w r
  read -r w r <"$work/time"
  walls[$label]+="$w "
  [ "$r" -gt "${rss[$label]:-0}" ] && rss[$label]=$r
  size[$label]=$(stat -c %s "$work/out/sys-initrd.img")
  printf '  %-22s %6.2f s %7.1f MB\n' "$label" "$w" "$(echo "$r/1024" | bc -l)" >&2
}
same=identical
for round in $(seq "$rounds"); do
  echo "round $round" >&2
  run "before full" "$before"
  rm -rf "$segments"
  run "after full" "$after"
  run "after again" "$after"
  rm -rf "$segments" "$KILN_CACHE/layer-index"
  run "after no index" "$after"
  new_app
  run "before changed" "$before"
  run "after changed" "$after"
  run "before 1 core" "$before" 0
  rm -rf "$segments"
  run "after 1 core" "$after" 0
  cp "$work/out/sys-initrd.img" "$work/one-core.img"
  rm -rf "$segments"
  run "after 2 cores" "$after" 0,1
  cmp -s "$work/one-core.img" "$work/out/sys-initrd.img" || same=DIFFERENT
  run "before full zstd" "$before" "" zstd
  rm -rf "$segments"
  run "after full zstd" "$after" "" zstd
  rm -rf "$segments"
  run "after full lz4" "$after" "" lz4
done

median() { printf '%s\n' $1 | sort -g | sed -n "$((($(wc -w <<<"$1") + 1) / 2))p"; }
t() { median "${walls[$1]}"; }
mb() { echo "$1/1000000" | bc -l; }
printf '\nroot filesystem %.0f MB; initrd, gzip: before %.1f MB, after %.1f MB; zstd: before %.1f MB, after %.1f MB\n' \
  "$(mb "$rootfs")" "$(mb "${size[before full]}")" "$(mb "${size[after full]}")" \
  "$(mb "${size[before full zstd]}")" "$(mb "${size[after full zstd]}")"
printf '%-36s %8s %8s %7s\n' "kernel+initrd (median of $rounds)" before after ratio
walls[before no index]=${walls[before full]}
for c in full "no index" changed "1 core" "full zstd"; do
  printf '%-36s %7.2fs %7.2fs %6.2fx\n' "$c" "$(t "before $c")" "$(t "after $c")" "$(echo "$(t "after $c")/$(t "before $c")" | bc -l)"
done
printf '%-36s %8s %7.2fs %6.2fx of after full\n' "again (every segment cached)" - "$(t "after again")" "$(echo "$(t "after again")/$(t "after full")" | bc -l)"
printf '%-36s %8s %7.2fs %6.2fx of after full\n' "changed (one service image)" - "$(t "after changed")" "$(echo "$(t "after changed")/$(t "after full")" | bc -l)"
printf '%-36s %6.1fMB %6.1fMB\n' "peak RSS, full, gzip" "$(echo "${rss[before full]}/1024" | bc -l)" "$(echo "${rss[after full]}/1024" | bc -l)"
printf '%-36s %6.1fMB %6.1fMB\n' "peak RSS, full, zstd" "$(echo "${rss[before full zstd]}/1024" | bc -l)" "$(echo "${rss[after full zstd]}/1024" | bc -l)"
printf '%-36s %8s %7.2fs %6.1fMB, %.1f MB\n' "full, lz4: wall, peak RSS, initrd" - "$(t "after full lz4")" \
  "$(echo "${rss[after full lz4]}/1024" | bc -l)" "$(mb "${size[after full lz4]}")"
printf '%-36s %8s %8s\n' "initrd on 1 core vs 2 (after)" - "$same"
