#!/bin/sh
# select-modules.sh SRC LIST OUT: from the unpacked kernel package SRC, write OUT/kernel,
# OUT/System.map and OUT/kernel.tar holding the modules named in LIST and everything they depend
# on, with modules.dep and friends made by depmod for exactly that set.
set -eu
src=$1 list=$2 out=$3
version=$(ls "$src/lib/modules")
full="$src/lib/modules/$version"
stage=/tmp/stage
mkdir -p "$out" "$stage/lib/modules/$version"
cp "$src/boot/vmlinuz-$version" "$out/kernel"
cp "$src/boot/System.map-$version" "$out/System.map"
depmod -b "$src" "$version"
wanted=$(grep -v '^#' "$list" | tr -s ' \n' '\n' | sed '/^$/d')
for m in $wanted; do
  deps=$(modprobe -d "$src" -S "$version" --show-depends "$m") || {
    echo "module $m is not in kernel $version" >&2; exit 1; }
  # A module built into the kernel needs nothing: modprobe says "builtin NAME".
  for p in $(echo "$deps" | awk '$1 == "insmod" {print $2}'); do
    rel=${p#"$src/"}
    mkdir -p "$stage/$(dirname "$rel")"
    cp "$p" "$stage/$rel"
  done
done
cp "$full/modules.builtin" "$full/modules.builtin.modinfo" "$stage/lib/modules/$version/"
# modules.order (depmod's order for modules.dep) for the chosen modules only: the full one is
# 160 kB that every boot would unpack.
while read -r m; do
  if [ -e "$stage/lib/modules/$version/$m" ]; then echo "$m"; fi
done < "$full/modules.order" > "$stage/lib/modules/$version/modules.order"
depmod -b "$stage" "$version"
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$stage" -cf "$out/kernel.tar" lib
echo "kernel $version: $(tar -tf "$out/kernel.tar" | grep -c '\.ko$') modules" >&2
