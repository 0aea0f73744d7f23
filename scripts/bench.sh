#!/usr/bin/env bash
# Benchmark kiln build: a realistic manifest (kernel, two init images, three services sharing a
# ~300 MB image with ~12,000 files) from a warm store, then from a local registry into a cold
# store. Prints wall time, peak RSS and throughput. Figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --release -q
kiln=$PWD/target/release/kiln
work=$(mktemp -d); trap 'kill $reg 2>/dev/null || true; rm -rf "$work"' EXIT
conf=$PWD/../shared/conformance/linuxkit
export KILN_CACHE=$work/warm
for img in "$conf"/images/*.tar; do $kiln cache import "$img" >/dev/null; done
python3 - "$work/big.tar" <<'PY'
import hashlib, io, json, os, random, sys, tarfile, gzip
random.seed(1)
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d in range(120):
        info = tarfile.TarInfo(f"usr/lib/pkg{d}"); info.type = tarfile.DIRTYPE; info.mode = 0o755; t.addfile(info)
        for f in range(100):
            size = random.choice([512, 4096, 16384, 65536])
            data = (bytes(random.getrandbits(8) for _ in range(64)) * (size // 64))
            info = tarfile.TarInfo(f"usr/lib/pkg{d}/f{f}"); info.size = len(data); info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
raw = layer.getvalue(); gz = gzip.compress(raw, 6, mtime=0)
sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz), "size": len(gz)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest), "annotations": {"io.containerd.image.name": "docker.io/bench/big:1"}}]}).encode()
with tarfile.open(sys.argv[1], "w") as out:
    for name, data in [(f"blobs/sha256/{sha(b)[7:]}", b) for b in (gz, config, manifest)] + [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]:
        info = tarfile.TarInfo(name); info.size = len(data); out.addfile(info, io.BytesIO(data))
print(f"synthetic image: {len(raw)/1e6:.0f} MB uncompressed, {len(gz)/1e6:.0f} MB gzip", file=sys.stderr)
PY
$kiln cache import "$work/big.tar" >/dev/null
cat > "$work/bench.yml" <<'YML'
kernel:
  image: kiln-test/kernel:6.6.0
  cmdline: console=ttyS0
init: [kiln-test/init:1, bench/big:1]
onboot:
  - name: tool
    image: kiln-test/plain:1
services:
  - name: a
    image: bench/big:1
  - name: b
    image: bench/big:1
    readonly: false
  - name: svc
    image: kiln-test/svc:1
YML
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
  read -r wall rss < "$work/time"
  local bytes=$(du -cb "$work"/out/* 2>/dev/null | tail -1 | cut -f1)
  printf '%-44s wall %6.2f s  peak RSS %6.1f MB  output %6.1f MB  %6.1f MB/s\n' "$label" "$wall" "$(echo "$rss/1024" | bc -l)" "$(echo "$bytes/1000000" | bc -l)" "$(echo "$bytes/1000000/$wall" | bc -l)"
  rm -rf "$work/out"
}
measure "warm store, tar" $kiln build -f tar --dir "$work/out" "$work/bench.yml"
measure "warm store, kernel+initrd (gzip)" $kiln build -f kernel+initrd --dir "$work/out" "$work/bench.yml"
measure "warm store, kernel+initrd (zstd)" $kiln build -f kernel+initrd --compress zstd --dir "$work/out" "$work/bench.yml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$work/reg" "$port" > "$work/reg.yml"
docker-registry serve "$work/reg.yml" >/dev/null 2>&1 & reg=$!
until (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
for i in kiln-test/kernel:6.6.0 kiln-test/init:1 kiln-test/plain:1 kiln-test/svc:1 bench/big:1; do
  $kiln cache tag $i 127.0.0.1:$port/$i && $kiln cache push 127.0.0.1:$port/$i >/dev/null
done
KILN_CACHE=$work/cold measure "cold store, local registry, tar" $kiln build -f tar --mirror docker.io=http://127.0.0.1:$port --dir "$work/out" "$work/bench.yml"
