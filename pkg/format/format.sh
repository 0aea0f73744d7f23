#!/bin/sh
# format.sh [-t ext4|ext3|ext2] [-l LABEL] [-f] [DEVICE]
type=ext4 label=kiln-data force=false
while getopts t:l:f opt; do
  case $opt in
    t) type=$OPTARG ;;
    l) label=$OPTARG ;;
    f) force=true ;;
    *) echo "usage: format.sh [-t TYPE] [-l LABEL] [-f] [DEVICE]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
dev=$1
has_fs() { /sbin/blkid -p "$1" >/dev/null 2>&1; }
if [ -z "$dev" ]; then
  for b in $(ls /sys/block | grep -E '^(vd|sd|xvd|nvme)'); do
    [ "$(cat /sys/block/$b/size)" -gt 0 ] || continue
    has_fs "/dev/$b" && continue
    ls /sys/block/$b | grep -q "^$b" && continue  # partitioned
    dev=/dev/$b
    break
  done
  if [ -z "$dev" ]; then
    echo "no unformatted disk; nothing to do"
    exit 0
  fi
fi
if [ ! -b "$dev" ]; then
  echo "$dev is not a block device" >&2
  exit 1
fi
if has_fs "$dev" && ! $force; then
  echo "$dev already has a file system ($(/sbin/blkid -p -o value -s TYPE "$dev")); leaving it"
  exit 0
fi
echo "formatting $dev as $type, label $label"
exec /sbin/mke2fs -q -F -t "$type" -L "$label" "$dev"
