#!/usr/bin/env bash
# Install what kiln's build, tests and quick start need on Debian 12. Idempotent: installs only
# the packages missing (and runs no apt at all when none is), says which in one line, and keeps
# apt's output in a log file whose end it shows if apt fails.
#   docker-registry, skopeo: a real registry and a peer client for the registry tests
#   debootstrap: the Debian base image; qemu-system-x86, qemu-utils: booting what kiln builds
#   runc: the peer runtime the multi-stage example runs under (and the start-latency benchmark)
#   redis-tools: redis-cli, the host side of the redis-os test
#   genisoimage: isoinfo, an independent reader of the ISOs kiln writes
#   lz4, zstd, cpio: independent readers of the initrds kiln writes
#   man-db: `man`, which reads the manual pages kiln generates (and the test that renders them)
#   docker.io: a private Docker engine, the source of images in the `kiln build --docker` test
#   openssl: the throwaway certificate authority of the TLS registry test
#   ovmf: the UEFI firmware the EFI images and UKIs boot under (SeaBIOS comes with qemu)
#   xorriso, gdisk, fdisk, dosfstools, mtools, squashfs-tools, erofs-utils: independent checkers
#     of the ISOs, partition tables, FAT file systems and root images kiln writes (and Debian's
#     mksquashfs and mkfs.erofs, which the root image benchmark compares kiln's writers with)
#   systemd-boot-efi: the EFI stub the UKI writer's unit tests read (builds take it from kiln's
#     bootloader package instead)
#   python3-venv: the Python environment of independent checkers from PyPI (below)
#   qemu-user-static, binfmt-support: RUN steps of arm64 images on this x86_64 host
#   qemu-system-arm, qemu-efi-aarch64: booting arm64 systems (-M virt, -M raspi3b; UEFI)
#   gcc-aarch64-linux-gnu, rustc-web, cargo-web, libstd-rust-web-dev:arm64: kiln-init for arm64,
#     cross-compiled with Debian's toolchain (the `web` Rust is the one with an arm64 std)
#   uidmap: newuidmap and newgidmap, which map a user's subordinate ids for rootless builds
set -euo pipefail
pkgs=(docker-registry skopeo file cpio zstd lz4 gzip tar python3 time bc debootstrap qemu-system-x86 qemu-utils runc git redis-tools genisoimage man-db docker.io openssl ovmf xorriso gdisk fdisk dosfstools mtools squashfs-tools erofs-utils systemd-boot-efi python3-venv
  qemu-user-static binfmt-support qemu-system-arm qemu-efi-aarch64 gcc-aarch64-linux-gnu rustc-web
  cargo-web libstd-rust-web-dev:arm64 uidmap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# arm64 packages (the Rust standard library for the cross build) come from the same archive.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
if [ ${#missing[@]} -gt 0 ]; then
  log=$(mktemp "${TMPDIR:-/tmp}/kiln-install-deps.XXXXXX.log")
  echo "installing with apt-get: ${missing[*]} (its output: $log)"
  if ! {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"
  } >"$log" 2>&1 </dev/null; then
    echo "error: apt-get could not install ${missing[*]}; the end of its output ($log):" >&2
    tail -n 20 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
  rm -f "$log"
fi
# arm64 binaries run through qemu-user: binfmt_misc is mounted and the handler enabled after
# every boot (Debian registers it with the F flag, so it works inside containers and chroots).
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  $SUDO update-binfmts --enable qemu-aarch64
fi
command -v cargo >/dev/null || { echo "kiln needs a Rust toolchain (cargo) on PATH" >&2; exit 1; }

# Independent checkers from PyPI, in a virtual environment kept outside the repository (the tests
# find it there, or at KILN_TEST_PYTHON): cryptography verifies kiln's signatures, spdx-tools'
# pyspdxtools and cyclonedx-python-lib validate its SBOMs.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/kiln/python"
py_pkgs=(cryptography spdx-tools "cyclonedx-python-lib[json-validation]")
if ! "$venv/bin/python3" -c 'import cryptography, spdx_tools, cyclonedx' 2>/dev/null; then
  echo "installing Python checkers into $venv: ${py_pkgs[*]}"
  log=$(mktemp "${TMPDIR:-/tmp}/kiln-install-python.XXXXXX.log")
  if ! { /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install -q "${py_pkgs[@]}"; } >"$log" 2>&1 </dev/null; then
    echo "error: could not install ${py_pkgs[*]} from PyPI; the end of the log ($log):" >&2
    tail -n 20 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
  rm -f "$log"
fi
