#!/usr/bin/env bash
# Regenerate the expected results of the Dockerfile tests with BuildKit itself: starts a private
# Docker engine (Debian's docker.io), imports the same Debian base kiln's tests use, builds each
# case with `DOCKER_BUILDKIT=1 docker build` and reduces the saved image with listing.py.
# kiln never needs Docker; only this script does. Usage: regen.sh [CASE...] (default: all).
# build.json may give build_args (null: the name alone), target, dockerfile (-f), secrets
# (id -> file of the case) and expect_failure (the build must fail; no expected.json).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
base_tar=$(bash "$repo/scripts/base-image.sh")
command -v dockerd >/dev/null || apt-get install -y -o DPkg::Lock::Timeout=600 docker.io
work=$(mktemp -d /tmp/kiln-regen.XXXXXX)
export DOCKER_HOST="unix://$work/docker.sock"
# The Debian client (20.10) drives BuildKit itself; newer clients want the buildx plugin.
docker() { /usr/bin/docker "$@"; }
dockerd -H "$DOCKER_HOST" --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/pid" \
  --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; sleep 2; rm -rf "$work"' EXIT
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
docker import "$base_tar" debian:bookworm >/dev/null
export DOCKER_BUILDKIT=1
failed=()
dirs=("$here"/cases/*/)
if [ $# -gt 0 ]; then dirs=(); for c in "$@"; do dirs+=("$here/cases/$c/"); done; fi
for dir in "${dirs[@]}"; do
  name=$(basename "$dir")
  if grep -q expected_by_hand "$dir/build.json" 2>/dev/null; then
    echo "== $name: expected results kept (written by hand; see build.json)" >&2; continue
  fi
  args=()
  expect_failure=
  if [ -f "$dir/build.json" ]; then
    while IFS= read -r a; do args+=("$a"); done < <(python3 -c '
import json,sys
d=sys.argv[2]
b=json.load(open(sys.argv[1]))
for k,v in b.get("build_args",{}).items():
    print("--build-arg"); print(k if v is None else f"{k}={v}")
if "target" in b: print("--target"); print(b["target"])
if "dockerfile" in b: print("-f"); print(d + b["dockerfile"])
for i,src in b.get("secrets",{}).items(): print("--secret"); print(f"id={i},src={d}{src}")' "$dir/build.json" "$dir")
    expect_failure=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("expect_failure",""))' "$dir/build.json")
  fi
  echo "== $name" >&2
  if ! docker build -q --network host "${args[@]}" -t "kiln-case:$name" "$dir" >"$work/build.log" 2>&1; then
    if [ -n "$expect_failure" ]; then echo "   fails as expected: $(tail -1 "$work/build.log")" >&2; continue; fi
    echo "   BuildKit cannot build $name:" >&2; tail -3 "$work/build.log" >&2; failed+=("$name"); continue
  fi
  if [ -n "$expect_failure" ]; then
    echo "   BuildKit built $name, which build.json expects to fail" >&2; failed+=("$name"); continue
  fi
  if docker save -o "$work/img.tar" "kiln-case:$name" debian:bookworm 2>/dev/null; then
    python3 "$here/listing.py" "$work/img.tar" "kiln-case:$name" debian:bookworm >"$dir/expected.json"
  else
    # An image without layers (metadata only) cannot be saved; its config is all there is.
    docker image inspect "kiln-case:$name" | python3 "$here/listing.py" --inspect >"$dir/expected.json"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "not regenerated: ${failed[*]}" >&2; exit 1; fi
