#!/usr/bin/env bash
# Benchmark `kiln image build` against its peers on the same Dockerfiles and the same Debian
# base: `docker build` with BuildKit (Debian's docker.io, a private daemon started here) and
# `buildah bud --layers` (Debian's buildah). For each Dockerfile: a cold build (empty build
# cache; the base image present and unpacked, as `docker load` and `buildah pull` leave it), a warm rebuild with nothing changed, and a rebuild after one source
# file changed. Prints a table of wall times; figures, not assertions. kiln never needs either peer.
#
#   app:     an offline multi-stage build: 3,000 source files copied in, processed by RUN
#            steps, the product copied into a slim stage
#   hello-c: examples/hello-c (apt-get install build-essential, gcc -static, scratch stage);
#            its cold time is dominated by the Debian mirror
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
missing=()
for p in docker.io buildah; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi
cargo build --release -q
kiln=$PWD/target/release/kiln
base_tar=$(bash scripts/base-image.sh)
work=$(mktemp -d /tmp/kiln-bench.XXXXXX)
export DOCKER_HOST="unix://$work/docker.sock"
docker() { /usr/bin/docker "$@"; }   # Debian's 20.10 client drives BuildKit without buildx
dockerd -H "$DOCKER_HOST" --data-root "$work/docker" --exec-root "$work/dexec" --pidfile "$work/dpid" \
  --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
cleanup() {
  kill "$(cat "$work/dpid" 2>/dev/null)" 2>/dev/null || true
  sleep 3
  umount -R "$work/buildah/root/overlay" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done

# The same base everywhere: kiln imports the debootstrap tarball, the peers load kiln's export.
export KILN_CACHE=$work/kiln
$kiln image import "$base_tar" debian:bookworm >/dev/null
$kiln cache export --format docker -o "$work/base.tar" debian:bookworm
docker load -i "$work/base.tar" >/dev/null
bah=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
"${bah[@]}" pull -q "docker-archive:$work/base.tar" >/dev/null
"${bah[@]}" tag "$("${bah[@]}" images -q | head -1)" docker.io/library/debian:bookworm
# kiln unpacks a base layer on first use, as the peers did on load: do that outside the timings.
mkdir -p "$work/warmup" && printf 'FROM debian:bookworm\nRUN true\n' >"$work/warmup/Dockerfile"
$kiln image build "$work/warmup" >/dev/null 2>&1

# The offline app.
app=$work/app
mkdir -p "$app/src"
python3 - "$app/src" <<'PY'
import os, random, sys
random.seed(7)
for d in range(30):
    os.makedirs(f"{sys.argv[1]}/mod{d}", exist_ok=True)
    for f in range(100):
        with open(f"{sys.argv[1]}/mod{d}/file{f}.txt", "w") as out:
            out.write("".join(random.choice("abcdefghij \n") for _ in range(random.choice([200, 2000, 8000]))))
PY
cat >"$app/Dockerfile" <<'EOF'
FROM debian:bookworm AS build
WORKDIR /src
COPY src/ ./
RUN find . -type f | sort | xargs sha256sum > /MANIFEST && tar -czf /app.tgz .
RUN mkdir -p /out && cp /MANIFEST /app.tgz /out/ && wc -l < /MANIFEST > /out/count

FROM debian:bookworm
RUN useradd -r app && mkdir -p /opt/app && chown app /opt/app
COPY --from=build --chown=app /out/ /opt/app/
USER app
CMD ["sh", "-c", "cat /opt/app/count"]
EOF
cp -r examples/hello-c "$work/hello-c"

now() { date +%s.%N; }
time_it() { local t0; t0=$(now); "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }; echo "$(now) - $t0" | bc; }
declare -A t
for case in app hello-c; do
  ctx=$work/$case
  touch_file=$ctx/src/mod3/file5.txt; [ "$case" = hello-c ] && touch_file=$ctx/hello.c
  for tool in kiln kiln-zstd kiln-none buildkit buildah; do
    case $tool in
      kiln) run=("$kiln" image build -t "bench/$case" "$ctx"); clear=(rm -rf "$KILN_CACHE/build/cache") ;;
      kiln-zstd) run=("$kiln" image build --compression zstd -t "bench/$case" "$ctx"); clear=(rm -rf "$KILN_CACHE/build/cache") ;;
      kiln-none) run=("$kiln" image build --compression none -t "bench/$case" "$ctx"); clear=(rm -rf "$KILN_CACHE/build/cache") ;;
      buildkit) run=(env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host -t "bench/$case" "$ctx"); clear=(docker builder prune -af) ;;
      buildah) run=("${bah[@]}" bud --layers -q --network host -t "bench/$case" "$ctx"); clear=(sh -c "${bah[*]} rmi -f bench/$case >/dev/null 2>&1; ${bah[*]} rmi --prune >/dev/null 2>&1; true") ;;
    esac
    cp "$touch_file" "$work/orig"
    "${clear[@]}" >/dev/null 2>&1 || true
    t[$case,$tool,cold]=$(time_it "${run[@]}")
    t[$case,$tool,warm]=$(time_it "${run[@]}")
    echo "// changed" >>"$touch_file"
    t[$case,$tool,changed]=$(time_it "${run[@]}")
    cp "$work/orig" "$touch_file"
    echo "$case $tool: cold ${t[$case,$tool,cold]} s, warm ${t[$case,$tool,warm]} s, one file changed ${t[$case,$tool,changed]} s" >&2
  done
done
printf '\n%-8s %-9s %9s %9s %13s\n' build tool cold warm "one changed"
for case in app hello-c; do
  for tool in kiln kiln-zstd kiln-none buildkit buildah; do
    printf '%-8s %-9s %8.2fs %8.2fs %12.2fs\n' "$case" "$tool" "${t[$case,$tool,cold]}" "${t[$case,$tool,warm]}" "${t[$case,$tool,changed]}"
  done
done
