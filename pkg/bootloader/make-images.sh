#!/bin/sh
# make-images.sh SRC OUT [ARCH]: from the Debian packages unpacked in SRC, write OUT/boot-files/
# for ARCH (amd64, the default, or arm64; see the Dockerfile). Each GRUB image is made twice and
# compared, so a build that is not reproducible fails.
set -eu
src=$1 out=$2/boot-files arch=${3:-amd64}
grub=$src/usr/lib/grub

# grub-mkimage (grub-common, the build machine's) must be of the version of the modules.
tools=$(awk '$1 == "grub-common" { print $2 }' "$src/VERSIONS")
awk -v want="$tools" '$1 ~ /^grub-.*-bin$/ && $2 != want { bad = 1; print "make-images.sh: " $1 " " $2 " does not match grub-common " want > "/dev/stderr" } END { exit bad }' "$src/VERSIONS"

# Modules every GRUB image carries: reading a partitioned disk, the shell language of grub.cfg,
# a serial console, and booting Linux.
common="normal configfile linux boot echo test search search_fs_file search_fs_uuid search_label
  serial terminal part_msdos part_gpt fat iso9660"

mkimage() { # mkimage OUTPUT ARGS...: grub-mkimage, twice, and the two outputs must be identical
  o=$1; shift
  grub-mkimage -o "$o" "$@"
  grub-mkimage -o "$o.again" "$@"
  cmp "$o" "$o.again" || { echo "grub-mkimage output $o is not reproducible" >&2; exit 1; }
  rm "$o.again"
}

# UEFI: the device holding /boot/grub/grub.cfg becomes root (the EFI image itself may sit on an
# ESP, or on an El Torito FAT image, that holds no grub.cfg).
cat > /tmp/efi-early.cfg <<'CFG'
search --no-floppy --set=root --file /boot/grub/grub.cfg
set prefix=($root)/boot/grub
CFG

case "$arch" in
amd64)
  mkdir -p "$out/grub/i386-pc" "$out/grub/x86_64-efi" "$out/systemd-boot" "$out/copyright"

  # BIOS disk: core.img embedded after the MBR; the prefix names the first MBR partition of the
  # disk GRUB was booted from.
  mkimage "$out/grub/i386-pc/core.img" -d "$grub/i386-pc" -O i386-pc \
    -p '(,msdos1)/boot/grub' biosdisk $common
  cp "$grub/i386-pc/boot.img" "$out/grub/i386-pc/boot.img"

  # BIOS ISO: the El Torito image (cdboot.img + core); root is the device booted from (the CD,
  # or the whole disk when a hybrid ISO is booted through boot_hybrid.img).
  mkimage "$out/grub/i386-pc/eltorito.img" -d "$grub/i386-pc" -O i386-pc-eltorito \
    -p /boot/grub biosdisk $common
  cp "$grub/i386-pc/boot_hybrid.img" "$out/grub/i386-pc/boot_hybrid.img"

  mkimage "$out/grub/x86_64-efi/BOOTX64.EFI" -d "$grub/x86_64-efi" -O x86_64-efi \
    -c /tmp/efi-early.cfg -p /boot/grub efi_gop efi_uga all_video $common
  stub=linuxx64.efi.stub
  ;;
arm64)
  # UEFI only: no BIOS images. (efi_uga is x86's.)
  mkdir -p "$out/grub/arm64-efi" "$out/systemd-boot" "$out/copyright"
  mkimage "$out/grub/arm64-efi/BOOTAA64.EFI" -d "$grub/arm64-efi" -O arm64-efi \
    -c /tmp/efi-early.cfg -p /boot/grub efi_gop all_video $common
  stub=linuxaa64.efi.stub
  ;;
*)
  echo "make-images.sh: no boot loader images for $arch (amd64 and arm64 have them)" >&2
  exit 1
  ;;
esac

cp "$src/usr/lib/systemd/boot/efi/$stub" "$out/systemd-boot/$stub"
cp "$src/VERSIONS" "$out/VERSIONS"
cp "$src/grub.copyright" "$out/copyright/grub"
cp "$src/usr/share/doc/systemd-boot-efi/copyright" "$out/copyright/systemd-boot-efi"
chmod 0644 $(find "$out" -type f)
