#!/bin/sh
# collect.sh SRC OUT: from the raspi-firmware package unpacked in SRC, the Raspberry Pi 3's
# firmware (the files LinuxKit's rpi3 output carries) into OUT/boot/, with the package's
# copyright file, which holds the firmware's licence, as OUT/boot/LICENCE.broadcom; and
# OUT/VERSIONS and OUT/copyright.
set -eu
src=$1 out=$2
fw=$src/usr/lib/raspi-firmware
mkdir -p "$out/boot"
for f in bootcode.bin start.elf fixup.dat start_cd.elf fixup_cd.dat start_x.elf fixup_x.dat; do
  [ -s "$fw/$f" ] || { echo "collect.sh: the raspi-firmware package has no $f" >&2; exit 1; }
  cp "$fw/$f" "$out/boot/$f"
done
cp "$src/usr/share/doc/raspi-firmware/copyright" "$out/boot/LICENCE.broadcom"
cp "$src/usr/share/doc/raspi-firmware/copyright" "$out/copyright"
cp "$src/VERSIONS" "$out/VERSIONS"
chmod 0644 $(find "$out" -type f)
