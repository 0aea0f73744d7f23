#!/usr/bin/env bash
# Benchmark what runs inside a kiln system, and kiln's runtime on this machine. Figures, not
# assertions; they go to BENCHMARKS.md.
#  - boot (qemu, TCG here; guest clock): kernel start to kiln-init, to the first onboot
#    container's first output, to all services running;
#  - kiln-init's memory (VmRSS and VmHWM of PID 1 with services running);
#  - image sizes of the examples;
#  - container start latency on the host: the same bundle run to completion N times by
#    `kiln run bundle` and by Debian's runc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --release -q -p kiln
bash scripts/build-init.sh >/dev/null
kiln=$PWD/target/release/kiln
export KILN_CACHE=${KILN_CACHE:-$HOME/.cache/kiln-bench}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if ! $kiln cache ls | grep -q debian:bookworm; then
  $kiln image import "$(bash scripts/base-image.sh)" debian:bookworm >/dev/null
fi
runs=${RUNS:-3}

echo "== image sizes"
for ex in hello minimal redis-os; do
  $kiln build -f kernel+initrd --name "$ex" --dir "$work" "examples/$ex.yml" >/dev/null 2>&1
  k=$(stat -c %s "$work/$ex-kernel"); i=$(stat -c %s "$work/$ex-initrd.img")
  printf '%-10s kernel %5.1f MB  initrd %5.1f MB  total %5.1f MB\n' "$ex" \
    "$(bc -l <<<"$k/1000000")" "$(bc -l <<<"$i/1000000")" "$(bc -l <<<"($k+$i)/1000000")"
done

echo "== boot (guest clock, TCG, $runs runs, median)"
cat > "$work/boot.yml" <<YML
kernel:
  image: "@pkg:$PWD/pkg/kernel"
  cmdline: "console=ttyS0 quiet"
init:
  - "@pkg:$PWD/pkg/init"
onboot:
  - name: first
    image: "@pkg:$PWD/pkg/busybox"
    command: ["/bin/sh", "-c", "echo up \$(cut -d' ' -f1 /proc/uptime)"]
  - name: dhcp
    image: "@pkg:$PWD/pkg/dhcp"
services:
  - name: getty
    image: "@pkg:$PWD/pkg/getty"
  - name: redis
    image: "@pkg:$PWD/pkg/redis"
  - name: probe
    image: "@pkg:$PWD/pkg/busybox"
    pid: host
    capabilities: [CAP_KILL, CAP_SYS_PTRACE]
    command: ["/bin/sh", "-c", "sleep 3; grep -E 'VmRSS|VmHWM' /proc/1/status | tr -s ' \t' ' ' | tr '\n' ' '; echo; kill -TERM 1"]
YML
$kiln build -f kernel+initrd --name boot --dir "$work" "$work/boot.yml" >/dev/null 2>&1
: > "$work/boots"
for _ in $(seq "$runs"); do
  timeout 300 $kiln run qemu --accel tcg "$work/boot" </dev/null > "$work/console" 2>&1 || true
  init=$(grep -o 'kiln-init: starting, [0-9.]*' "$work/console" | grep -o '[0-9.]*$')
  first=$(grep -o '^first: up [0-9.]*' "$work/console" | grep -o '[0-9.]*$')
  all=$(grep -o 'services running, [0-9.]*' "$work/console" | grep -o '[0-9.]*$')
  mem=$(grep -o '^probe: VmHWM.*' "$work/console" | head -1)
  echo "$init $first $all $mem" >> "$work/boots"
done
sort -n -k3 "$work/boots" | awk -v n="$runs" 'NR == int((n + 1) / 2) {
  printf "kernel -> kiln-init %s s; -> first onboot output %s s; -> all services running %s s\n", $1, $2, $3
  $1 = $2 = $3 = ""; printf "kiln-init memory:%s\n", $0 }'

echo "== container start latency (host, run to completion of /bin/true)"
n=${STARTS:-50}
$kiln image unpack "$($kiln pkg build pkg/busybox | tail -1)" "$work/bundle" >/dev/null 2>&1
(cd "$work/bundle" && rm -f config.json && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["root"]["readonly"] = True
json.dump(c, open("config.json", "w"))
PY
)
time_runs() { local s e; s=$(date +%s%N); for i in $(seq "$n"); do "$@" >/dev/null || exit 1; done; e=$(date +%s%N); bc -l <<<"($e-$s)/1000000/$n"; }
k=$(time_runs $kiln run bundle "$work/bundle")
r=$(cd "$work/bundle" && time_runs runc run "kiln-bench-$$")
printf 'kiln run bundle %.1f ms   runc run %.1f ms   (mean of %d)\n' "$k" "$r" "$n"
