#!/bin/sh
# Compare kiln's squashfs and erofs writers with Debian's mksquashfs and mkfs.erofs on the
# same directory tree: wall time and image size.
#
#   scripts/bench-rootfs.sh [TREE]
#
# TREE defaults to a Debian minbase tree made with debootstrap in $WORK/rootfs. Needs
# squashfs-tools and erofs-utils (and debootstrap without TREE). kiln's writers run through
# the ignored `bench_tree` tests of kiln-format, built in release mode; their time includes
# reading the tree. WORK (default: a new temporary directory) holds the images.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-$(mktemp -d)}
tree=${1:-}
if [ -z "$tree" ]; then
    tree=$work/rootfs
    if [ ! -d "$tree/usr" ]; then
        echo "debootstrap --variant=minbase bookworm $tree" >&2
        debootstrap --variant=minbase bookworm "$tree" >/dev/null
    fi
fi
for tool in mksquashfs mkfs.erofs unsquashfs fsck.erofs; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (squashfs-tools, erofs-utils)" >&2; exit 1; }
done

now() { date +%s.%N; }
size() { stat -c %s "$1"; }
row() { printf '%-34s %8.2f s %12s bytes\n' "$1" "$2" "$3"; }

# Warm the page cache so the first writer is not charged for reading the tree.
tar -cf - -C "$tree" . >/dev/null 2>&1 || true

echo "tree: $tree ($(du -sh --apparent-size "$tree" | cut -f1), $(find "$tree" | wc -l) entries), $(nproc) cores"

cd "$root"
# Build once, then time the test binary itself (not cargo).
bin=$(cargo test --release -p kiln-format --lib --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build kiln-format's tests" >&2; exit 1; }
bench() {
    # $1: test name, $2: output, remaining: environment.
    filter=$1 out=$2
    shift 2
    t0=$(now)
    env KILN_BENCH_TREE="$tree" KILN_BENCH_OUT="$out" "$@" \
        "$bin" "$filter" --ignored --exact >/dev/null
    echo "$(now) - $t0" | bc
}

t=$(bench squashfs::tests::bench_tree "$work/kiln-zstd9.sqfs" KILN_BENCH_COMP=zstd:9)
row "kiln squashfs zstd 9" "$t" "$(size "$work/kiln-zstd9.sqfs")"
t=$(bench squashfs::tests::bench_tree "$work/kiln-zstd15.sqfs" KILN_BENCH_COMP=zstd:15)
row "kiln squashfs zstd 15" "$t" "$(size "$work/kiln-zstd15.sqfs")"
t=$(bench squashfs::tests::bench_tree "$work/kiln-xz.sqfs" KILN_BENCH_COMP=xz)
row "kiln squashfs xz" "$t" "$(size "$work/kiln-xz.sqfs")"
t=$(bench squashfs::tests::bench_tree "$work/kiln-gzip.sqfs" KILN_BENCH_COMP=gzip)
row "kiln squashfs gzip 9" "$t" "$(size "$work/kiln-gzip.sqfs")"

for comp in "zstd -Xcompression-level 9" "zstd" xz gzip; do
    name=$(echo "$comp" | tr -d ' -' | sed 's/Xcompressionlevel//')
    t0=$(now)
    # shellcheck disable=SC2086
    mksquashfs "$tree" "$work/mk-$name.sqfs" -comp $comp -noappend -quiet -no-progress \
        -mkfs-time 1700000000 -all-time 1700000000 >/dev/null
    t=$(echo "$(now) - $t0" | bc)
    row "mksquashfs $comp ($(nproc) threads)" "$t" "$(size "$work/mk-$name.sqfs")"
    t0=$(now)
    # shellcheck disable=SC2086
    mksquashfs "$tree" "$work/mk1-$name.sqfs" -comp $comp -noappend -quiet -no-progress \
        -processors 1 -mkfs-time 1700000000 -all-time 1700000000 >/dev/null
    t=$(echo "$(now) - $t0" | bc)
    row "mksquashfs $comp (1 thread)" "$t" "$(size "$work/mk1-$name.sqfs")"
done

t=$(bench erofs::tests::bench_tree "$work/kiln.erofs")
row "kiln erofs (uncompressed)" "$t" "$(size "$work/kiln.erofs")"
t0=$(now)
mkfs.erofs --preserve-mtime -U 00000000-0000-0000-0000-000000000000 --quiet "$work/mk.erofs" "$tree" >/dev/null
t=$(echo "$(now) - $t0" | bc)
row "mkfs.erofs (uncompressed)" "$t" "$(size "$work/mk.erofs")"
t0=$(now)
mkfs.erofs -zlz4hc --preserve-mtime -U 00000000-0000-0000-0000-000000000000 --quiet "$work/mk-lz4hc.erofs" "$tree" >/dev/null
t=$(echo "$(now) - $t0" | bc)
row "mkfs.erofs -zlz4hc" "$t" "$(size "$work/mk-lz4hc.erofs")"

# Every kiln image passes the independent checkers.
for f in "$work"/kiln-*.sqfs; do unsquashfs -s "$f" >/dev/null; unsquashfs -l "$f" >/dev/null; done
fsck.erofs "$work/kiln.erofs" >/dev/null
echo "images in $work"
