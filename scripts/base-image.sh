#!/usr/bin/env bash
# The Debian base image for builds and tests, without Docker Hub: a `debootstrap --variant=minbase
# bookworm` tree, packed once into a tarball under the cache directory. Prints the tarball's path.
# Import it with `kiln image import TARBALL debian:bookworm`.
set -euo pipefail
cache="${KILN_SETUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-setup}"
tarball="$cache/debian-bookworm-minbase.tar"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 debootstrap >&2
  }
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
  tar --sort=name --numeric-owner --xattrs -C "$root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
echo "$tarball"
