#!/usr/bin/env bash
# Benchmark the output formats on examples/redis-os.yml (release build, warm store): for each
# format, the wall time and peak memory of `kiln build -f FORMAT` and the size of what it wrote
# (apparent and on disk: the raw disks are sparse); then every format in one build (one
# assembly pass) against kernel+initrd alone, in the same run. Figures, not assertions; they go
# to BENCHMARKS.md. ROUNDS (default 3) runs of each, interleaved; medians.
set -euo pipefail
source "$(dirname "$0")/bench-env.sh"
rounds=${ROUNDS:-3}
export SOURCE_DATE_EPOCH=1700000000
bootloader=$($kiln pkg build -q pkg/bootloader | tail -n 1)
manifest=examples/redis-os.yml
# Warm the store: the example's packages built, its images in place.
$kiln build -q -f kernel+initrd --dir "$work/warm" "$manifest" >/dev/null

formats=(kernel+initrd uki iso-bios iso-efi iso-efi-initrd raw-bios raw-efi qcow2-bios qcow2-efi
  vhd dynamic-vhd vmdk gcp aws kernel+squashfs kernel+erofs kernel+iso)
all="uki,iso-bios,iso-efi,iso-efi-initrd,raw-bios,raw-efi,qcow2-bios,qcow2-efi,vhd,vmdk,gcp,aws,kernel+initrd"

# measure NAME FORMATS: one build into a fresh directory; appends "seconds kib" to $work/NAME.
measure() {
  local name=$1 fmts=$2 out="$work/out-$1"
  rm -rf "$out"
  /usr/bin/time -f "%e %M" -o "$work/time" \
    $kiln build -q -f "$fmts" --bootloader "$bootloader" --dir "$out" --name redis-os "$manifest" >/dev/null
  cat "$work/time" >>"$work/$name"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for _ in $(seq "$rounds"); do
  for f in "${formats[@]}"; do measure "$f" "$f"; done
  measure all "$all"
  measure alone kernel+initrd
done

printf '%-16s %8s %10s %12s %12s\n' format wall "peak RSS" size "on disk"
for f in "${formats[@]}"; do
  t=$(cut -d' ' -f1 "$work/$f" | median)
  m=$(cut -d' ' -f2 "$work/$f" | median)
  size=$(du -cb --apparent-size "$work/out-$f"/* | tail -n1 | cut -f1)
  disk=$(du -cB1 "$work/out-$f"/* | tail -n1 | cut -f1)
  printf '%-16s %7ss %8.1f MB %9.1f MB %9.1f MB\n' "$f" "$t" "$(echo "$m/1024" | bc -l)" \
    "$(echo "$size/1000000" | bc -l)" "$(echo "$disk/1000000" | bc -l)"
done
ta=$(cut -d' ' -f1 "$work/all" | median)
tk=$(cut -d' ' -f1 "$work/alone" | median)
ma=$(cut -d' ' -f2 "$work/all" | median)
echo
echo "every format but dynamic-vhd and the root images in one build: ${ta}s, peak RSS $((ma / 1024)) MB"
echo "kernel+initrd alone, same run:                                 ${tk}s"
echo "ratio: $(echo "$ta/$tk" | bc -l | cut -c1-4)x"
