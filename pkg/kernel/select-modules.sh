#!/bin/sh
# select-modules.sh SRC ARCH OUT: from the unpacked kernel package SRC, write OUT/kernel,
# OUT/System.map and OUT/kernel.tar holding the modules named in modules.list and
# modules.ARCH.list (beside this script) and everything they depend on, with modules.dep and
# friends made by depmod for exactly that set, and the device trees dtbs.ARCH.list names
# (when there is one) under boot/dtb/.
set -eu
src=$1 arch=$2 out=$3
here=$(dirname "$0")
version=$(ls "$src/lib/modules")
full="$src/lib/modules/$version"
stage=/tmp/stage
mkdir -p "$out" "$stage/lib/modules/$version"
cp "$src/boot/vmlinuz-$version" "$out/kernel"
cp "$src/boot/System.map-$version" "$out/System.map"
depmod -b "$src" "$version"
lists="$here/modules.list"
if [ -e "$here/modules.$arch.list" ]; then lists="$lists $here/modules.$arch.list"; fi
wanted=$(cat $lists | grep -v '^#' | tr -s ' \n' '\n' | sed '/^$/d')
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
# Device trees (arm64), from /usr/lib/linux-image-VERSION/VENDOR/NAME.dtb to boot/dtb/VENDOR/.
top=lib
if [ -e "$here/dtbs.$arch.list" ]; then
  dtbs="$src/usr/lib/linux-image-$version"
  for pattern in $(grep -v '^#' "$here/dtbs.$arch.list"); do
    found=
    for f in "$dtbs"/$pattern; do
      [ -e "$f" ] || continue
      found=1
      rel=${f#"$dtbs/"}
      mkdir -p "$stage/boot/dtb/$(dirname "$rel")"
      cp "$f" "$stage/boot/dtb/$rel"
    done
    [ -n "$found" ] || { echo "no device tree $pattern in kernel $version" >&2; exit 1; }
  done
  top="boot lib"
fi
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$stage" -cf "$out/kernel.tar" $top
members=$(tar -tf "$out/kernel.tar")
echo "kernel $version ($arch): $(echo "$members" | grep -c '\.ko$') modules, $(echo "$members" | grep -c '\.dtb$') device trees" >&2
