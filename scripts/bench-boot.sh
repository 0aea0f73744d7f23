#!/usr/bin/env bash
# Benchmark what runs inside a kiln system, and kiln's runtime on this machine. Figures, not
# assertions; they go to BENCHMARKS.md.
#  - image sizes of the examples;
#  - boot (qemu, TCG here; guest clock, CLOCK_BOOTTIME from kernel start), in one run on the
#    same kernel and qemu, for each initrd compression in CODECS (default "gzip lz4 none"):
#      a busybox /init on the kernel package (its first output), then a kiln system: the kernel
#      starting /init (kiln-init running, from the kernel log), kiln-init's "starting" line, the
#      first onboot container's first output, the modules for the devices present loaded, all
#      services running, and first onboot output / busybox first output;
#  - kiln-init's memory (VmRSS and VmHWM of PID 1 with services running);
#  - container start latency on the host: the same bundle run to completion N times by
#    `kiln run bundle` and by Debian's runc.
# RUNS boots of each system (default 7), interleaved; medians. ICOUNT=1 runs qemu with
# `-icount shift=0` (one guest instruction per nanosecond of guest time): a deterministic clock,
# repeatable to about a millisecond, that shows where the time goes.
set -euo pipefail
source "$(dirname "$0")/bench-env.sh"
runs=${RUNS:-7}
codecs=${CODECS:-gzip lz4 none}
if [ -n "${ICOUNT:-}" ]; then
  # kiln run qemu starts qemu-system-x86_64 from PATH: this one adds -icount.
  mkdir -p "$work/bin"
  printf '#!/bin/sh\nexec %s -icount shift=0 "$@"\n' "$(command -v qemu-system-x86_64)" \
    >"$work/bin/qemu-system-x86_64"
  chmod +x "$work/bin/qemu-system-x86_64"
  export PATH="$work/bin:$PATH"
fi

echo "== image sizes"
for ex in hello minimal redis-os; do
  $kiln build -f kernel+initrd --name "$ex" --dir "$work" "examples/$ex.yml" >/dev/null 2>&1
  k=$(stat -c %s "$work/$ex-kernel"); i=$(stat -c %s "$work/$ex-initrd.img")
  printf '%-10s kernel %5.1f MB  initrd %5.1f MB  total %5.1f MB\n' "$ex" \
    "$(bc -l <<<"$k/1000000")" "$(bc -l <<<"$i/1000000")" "$(bc -l <<<"($k+$i)/1000000")"
done

echo "== boot (guest clock, TCG${ICOUNT:+ -icount shift=0}, $runs runs of each, medians)"
# The reference: busybox's shell as /init on the same kernel package, printing the uptime.
mkdir -p "$work/bbinit"
cat > "$work/bbinit/init" <<'SH'
#!/bin/sh
mount -t proc proc /proc
echo "busybox: up $(cut -d' ' -f1 /proc/uptime)"
dmesg | grep 'Run /init'
poweroff -f
SH
busybox=$($kiln pkg build pkg/busybox | tail -1)
printf 'FROM %s\nCOPY --chmod=755 init /init\n' "$busybox" > "$work/bbinit/Dockerfile"
$kiln image build -t kiln-bench/busybox-init "$work/bbinit" >/dev/null 2>&1
cat > "$work/busybox.yml" <<YML
kernel:
  image: "@pkg:$PWD/pkg/kernel"
  cmdline: "console=ttyS0 quiet"
init:
  - kiln-bench/busybox-init
YML
# kiln: two onboot containers (a shell, DHCP) and three services (getty, redis, a probe that
# reads init's memory and the kernel log's "Run /init" line, then powers off).
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
    capabilities: [CAP_KILL, CAP_SYS_PTRACE, CAP_SYSLOG]
    command: ["/bin/sh", "-c", "sleep 3; grep -E 'VmRSS|VmHWM' /proc/1/status | tr -s ' \t' ' ' | tr '\n' ' '; echo; dmesg | grep 'Run /init'; sleep 1; kill -TERM 1"]
YML
for c in $codecs; do
  for sys in busybox boot; do
    $kiln build -f kernel+initrd --compress "$c" --name "$sys-$c" --dir "$work" "$work/$sys.yml" >/dev/null 2>&1
  done
  printf '%-5s initrd: busybox %5.1f MB, kiln %5.1f MB\n' "$c" \
    "$(bc -l <<<"$(stat -c %s "$work/busybox-$c-initrd.img")/1000000")" \
    "$(bc -l <<<"$(stat -c %s "$work/boot-$c-initrd.img")/1000000")"
done
# The number after WORD in the console output, or "-".
after() { grep -m1 -oE "$1 *[0-9]+\.[0-9]+" "$2" | grep -m1 -oE '[0-9]+\.[0-9]+$' || echo -; }
for _ in $(seq "$runs"); do
  for c in $codecs; do
    timeout 300 $kiln run qemu --accel tcg "$work/busybox-$c" </dev/null > "$work/console" 2>&1 || true
    echo "$c $(after '^busybox: up' "$work/console")" >> "$work/busybox"
    timeout 300 $kiln run qemu --accel tcg "$work/boot-$c" </dev/null > "$work/console" 2>&1 || true
    # /init started, kiln-init starting, first output, devices' modules loaded, all services.
    echo "$c $(after '\[' <(grep 'Run /init' "$work/console")) $(after 'kiln-init: starting,' "$work/console")" \
      "$(after '^first: up' "$work/console") $(after 'modules for the devices present: .*,' "$work/console")" \
      "$(after 'services running,' "$work/console")" >> "$work/kiln"
    grep -m1 -o '^probe: VmHWM.*' "$work/console" >> "$work/memory" || true
  done
done
# Median of column $2 of the lines of file $3 whose first field is $1.
median() { awk -v c="$1" -v k="$2" '$1 == c && $k != "-" { print $k }' "$3" | sort -n |
  awk '{ v[NR] = $1 } END { if (NR) printf "%.2f\n", v[int((NR + 1) / 2)]; else print "-" }'; }
echo "busybox: its first output; /init: the kernel starting kiln-init; starting: kiln-init's"
echo "\"starting\" line; devices: the modules for the devices present loaded"
printf '%-5s %9s | %9s %10s %13s %10s %13s | %s\n' codec busybox /init starting first-onboot \
  devices all-services "first / busybox"
for c in $codecs; do
  bb=$(median "$c" 2 "$work/busybox"); first=$(median "$c" 4 "$work/kiln")
  ratio=-; [ "$bb" != - ] && [ "$first" != - ] && ratio=$(printf '%.2f' "$(bc -l <<<"$first/$bb")")
  printf '%-5s %7s s | %7s s %8s s %11s s %8s s %11s s | %s\n' "$c" "$bb" \
    "$(median "$c" 2 "$work/kiln")" "$(median "$c" 3 "$work/kiln")" "$first" \
    "$(median "$c" 5 "$work/kiln")" "$(median "$c" 6 "$work/kiln")" "$ratio"
done
echo "kiln-init memory (probe, first boot): $(sed -n '1s/^probe: //p' "$work/memory" 2>/dev/null)"

echo "== container start latency (host, run to completion of /bin/true)"
n=${STARTS:-50}
$kiln image unpack "$busybox" "$work/bundle" >/dev/null 2>&1
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
