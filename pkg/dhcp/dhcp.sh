#!/bin/sh
# dhcp.sh [--daemon] [INTERFACE...]: get a lease on each interface (default: every one but lo).
# Waits up to WAIT seconds (default 10) for interfaces to appear.
script=/usr/share/udhcpc/default.script
daemon=false
if [ "$1" = "--daemon" ]; then daemon=true; shift; fi
ifaces="$*"
if [ -z "$ifaces" ]; then
  i=0
  while [ $i -lt "${WAIT:-10}" ]; do
    ifaces=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ' ')
    [ -n "$ifaces" ] && break
    sleep 1; i=$((i + 1))
  done
fi
if [ -z "$ifaces" ]; then
  echo "no network interface found" >&2
  exit 1
fi
if $daemon; then
  for i in $ifaces; do ip link set "$i" up; udhcpc -i "$i" -s "$script" -f -R -t 10 -T 2 & done
  wait
  exit $?
fi
failed=0
for i in $ifaces; do
  ip link set "$i" up
  # No -R: releasing on exit would deconfigure the interface again.
  udhcpc -i "$i" -s "$script" -n -q -t 10 -T 2 || { echo "no lease on $i" >&2; failed=1; }
done
exit $failed
