#!/bin/sh
# mount.sh [-l LABEL | -d DEVICE] [-o OPTIONS] MOUNTPOINT
label= dev= opts=
while getopts l:d:o: opt; do
  case $opt in
    l) label=$OPTARG ;;
    d) dev=$OPTARG ;;
    o) opts="-o $OPTARG" ;;
    *) echo "usage: mount.sh [-l LABEL | -d DEVICE] [-o OPTIONS] MOUNTPOINT" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
target=${1:-/var/lib}
if [ -n "$label" ]; then
  dev=$(/sbin/blkid -L "$label") || { echo "no file system labelled $label" >&2; exit 1; }
fi
if [ -z "$dev" ]; then
  for b in $(ls /sys/block | grep -E '^(vd|sd|xvd|nvme)'); do
    for d in /dev/$b $(ls /sys/block/$b | grep "^$b" | sed 's|^|/dev/|'); do
      if /sbin/blkid -p "$d" >/dev/null 2>&1; then dev=$d; break 2; fi
    done
  done
fi
if [ -z "$dev" ]; then
  echo "no disk with a file system to mount on $target" >&2
  exit 1
fi
type=$(/sbin/blkid -p -o value -s TYPE "$dev")
mkdir -p "$target"
echo "mounting $dev ($type) on $target"
mount -t "$type" $opts "$dev" "$target"
