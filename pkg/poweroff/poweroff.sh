#!/bin/sh
[ -n "$1" ] && sleep "$1"
echo "powering off"
kill -TERM 1
