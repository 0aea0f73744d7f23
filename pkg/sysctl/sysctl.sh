#!/bin/sh
# Apply every *.conf, kiln's first; a parameter this kernel lacks is reported, not fatal.
status=0
for f in /etc/sysctl.d/*.conf /host/etc/sysctl.d/*.conf; do
  [ -f "$f" ] || continue
  echo "applying $f"
  sysctl -p "$f" >/dev/null || status=1
done
exit $status
