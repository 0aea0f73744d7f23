#!/usr/bin/env bash
# The Debian base image for builds and tests, without Docker Hub: a `debootstrap --variant=minbase
# bookworm` tree, packed once into a tarball under the cache directory. Prints the tarball's path.
# Import it with `kiln image import TARBALL debian:bookworm` (and `kiln --arch arm64 image import
# ...` for arm64: the name then holds both platforms).
#   base-image.sh [ARCH]   ARCH: amd64 (default) or arm64. Another architecture's tree is made
#                          with `debootstrap --foreign` and finished in a chroot through
#                          qemu-user (binfmt_misc, see scripts/install-deps.sh).
set -euo pipefail
arch="${1:-amd64}"
cache="${KILN_SETUP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-setup}"
case "$arch" in
  amd64) tarball="$cache/debian-bookworm-minbase.tar" ;;
  *) tarball="$cache/debian-bookworm-minbase-$arch.tar" ;;
esac
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 debootstrap >&2
  }
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    debootstrap --variant=minbase bookworm "$root" "$mirror" >&2
  else
    debootstrap --variant=minbase --arch="$arch" --foreign bookworm "$root" "$mirror" >&2
    chroot "$root" /debootstrap/debootstrap --second-stage >&2
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
  tar --sort=name --numeric-owner --xattrs -C "$root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
echo "$tarball"
