#!/usr/bin/env bash
# Benchmark `kiln build -f kernel+initrd` on an input like the ones LinuxKit users build: Debian's
# kernel (pkg/kernel, built by `kiln pkg build`), busybox as init, a debootstrap image
# (scripts/base-image.sh, imported with `kiln image import`) used by two containers, and a small
# service image. "before" is kiln at BENCH_BASE_REV (default HEAD), built from `git archive` in
# a scratch directory with its own target directory (or the binary BENCH_BASE_KILN names);
# "after" is the working tree. Both run in this one run, on the same store:
#
#   full      warm image store, nothing cached of the initrd (median of 3)
#   again     the same build with every initrd segment cached (median of 3)
#   changed   after the small service image changed (median of 3; a new version each time)
#   1 core    `taskset -c 0`, and whether its initrd equals the one of `taskset -c 0,1`
#   peak RSS  /usr/bin/time's maximum resident set size of the full build
#
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

before=${BENCH_BASE_KILN:-}
if [ -z "$before" ]; then
  rev=${BENCH_BASE_REV:-HEAD}
  mkdir "$work/base"
  git archive --format=tar "$rev" | tar -x -C "$work/base"
  echo "building kiln at $rev (before) ..." >&2
  (cd "$work/base" && CARGO_TARGET_DIR="$work/base-target" cargo build --release -q -p kiln)
  before=$work/base-target/release/kiln
fi

export KILN_CACHE=$work/store
$after image import "$base_tar" debian:bookworm >/dev/null
echo "building pkg/kernel and pkg/busybox ..." >&2
mapfile -t pkgs < <($after pkg build pkg/kernel pkg/busybox)
kernel=${pkgs[0]} busybox=${pkgs[1]}
mkdir -p "$work/app"
printf 'FROM %s\nCOPY app.txt /srv/app.txt\nCMD ["/bin/cat", "/srv/app.txt"]\n' "$busybox" >"$work/app/Dockerfile"
version=0
new_app() { version=$((version + 1)); echo "app version $version" >"$work/app/app.txt"; $after image build -t bench/app:1 "$work/app" >/dev/null 2>&1; }
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

segments=$KILN_CACHE/initrd-segments
# run KILN [taskset CPUS] [compress]: one build into $work/out; sets wall and rss.
run() {
  local kiln=$1 cpus=${2:-} compress=${3:-gzip} pre=()
  [ -n "$cpus" ] && pre=(taskset -c "$cpus")
  rm -rf "$work/out"
  /usr/bin/time -f "%e %M" -o "$work/time" "${pre[@]}" "$kiln" build -f kernel+initrd \
    --compress "$compress" --name sys --dir "$work/out" "$work/bench.yml" >/dev/null
  read -r wall rss <"$work/time"
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
declare -A t r
# case LABEL KILN PREPARE [taskset] [compress]: median wall of 3 runs, largest peak RSS.
case_() {
  local label=$1 kiln=$2 prepare=$3 cpus=${4:-} compress=${5:-gzip} walls=() maxrss=0
  for _ in 1 2 3; do
    $prepare
    run "$kiln" "$cpus" "$compress"
    walls+=("$wall")
    [ "$rss" -gt "$maxrss" ] && maxrss=$rss
  done
  t[$label]=$(median "${walls[@]}")
  r[$label]=$maxrss
  printf '%-28s %6.2f s  peak RSS %6.1f MB\n' "$label" "${t[$label]}" "$(echo "$maxrss/1024" | bc -l)" >&2
}
cold() { rm -rf "$segments"; }
warm() { :; }

# The root filesystem and the initrd sizes.
$after build -f tar -o "$work/rootfs.tar" "$work/bench.yml" >/dev/null
rootfs=$(stat -c %s "$work/rootfs.tar")
rm -f "$work/rootfs.tar"

case_ "before full" "$before" warm
size_before=$(stat -c %s "$work/out/sys-initrd.img")
case_ "after full" "$after" cold
size_after=$(stat -c %s "$work/out/sys-initrd.img")
case_ "after again" "$after" warm
case_ "before changed" "$before" new_app
case_ "after changed" "$after" new_app
case_ "before 1 core" "$before" warm 0
case_ "after 1 core" "$after" cold 0
cp "$work/out/sys-initrd.img" "$work/one-core.img"
cold
run "$after" 0,1
if cmp -s "$work/one-core.img" "$work/out/sys-initrd.img"; then same=identical; else same=DIFFERENT; fi
case_ "before full zstd" "$before" warm "" zstd
case_ "after full zstd" "$after" cold "" zstd

mb() { echo "$1/1000000" | bc -l; }
ratio() { echo "${t[$1]}/${t[$2]}" | bc -l; }
printf '\nroot filesystem %.0f MB; initrd (gzip) before %.1f MB, after %.1f MB\n' "$(mb "$rootfs")" "$(mb "$size_before")" "$(mb "$size_after")"
printf '%-34s %9s %9s %7s\n' "kernel+initrd" before after ratio
for c in full changed "1 core" "full zstd"; do
  printf '%-34s %8.2fs %8.2fs %6.2fx\n' "$c" "${t[before $c]}" "${t[after $c]}" "$(ratio "after $c" "before $c")"
done
printf '%-34s %9s %8.2fs %6.2fx\n' "again (all segments cached)" - "${t[after again]}" "$(ratio "after again" "after full")"
printf '%-34s %9s %9s %6.2fx\n' "changed / after full" - - "$(ratio "after changed" "after full")"
printf '%-34s %7.1fMB %7.1fMB\n' "peak RSS, full (gzip)" "$(echo "${r[before full]}/1024" | bc -l)" "$(echo "${r[after full]}/1024" | bc -l)"
printf '%-34s %7.1fMB %7.1fMB\n' "peak RSS, full (zstd)" "$(echo "${r[before full zstd]}/1024" | bc -l)" "$(echo "${r[after full zstd]}/1024" | bc -l)"
printf '%-34s %9s %9s\n' "initrd, taskset -c 0 vs -c 0,1" - "$same"
