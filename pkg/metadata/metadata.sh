#!/bin/sh
# Look at each CD-ROM for user-data (or LinuxKit's config); no CD-ROM is not an error.
mkdir -p /run/config /mnt/cd
for dev in /dev/sr*; do
  [ -b "$dev" ] || continue
  mount -t iso9660 -o ro "$dev" /mnt/cd 2>/dev/null || continue
  for f in user-data config; do
    if [ -f "/mnt/cd/$f" ]; then
      cp "/mnt/cd/$f" /run/config/userdata
      echo "user data from $dev ($(wc -c < /run/config/userdata) bytes) in /run/config/userdata"
      umount /mnt/cd
      exit 0
    fi
  done
  umount /mnt/cd
done
echo "no user data"
