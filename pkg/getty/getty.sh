#!/bin/sh
# Keep a login (or, with INSECURE=true, a shell) on the console device.
tty=${CONSOLE:-ttyS0}
while true; do
  if [ "$INSECURE" = "true" ]; then
    /sbin/getty -n -l /usr/bin/console-shell 115200 "$tty" vt100
  else
    /sbin/getty 115200 "$tty" vt100
  fi
  sleep 1
done
