#!/usr/bin/env bash
# Run kiln's fuzz targets (fuzz/fuzz_targets) for SECONDS each, without cargo-fuzz: they are
# built with a nightly toolchain and libFuzzer's coverage instrumentation (as `cargo fuzz`
# builds them, less AddressSanitizer: kiln's parsers are safe Rust) and run on one core each,
# one after the other. Prints each target's run count; a crash stops the script with its input
# saved under fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (default: 60 seconds, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
-Coverflow-checks"
cargo +nightly build --quiet --release --manifest-path fuzz/Cargo.toml --target "$host" \
    $(printf -- '--bin %s ' "${targets[@]}")

printf '%-20s %12s %8s\n' target runs seconds
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    log=$(mktemp)
    if ! "fuzz/target/$host/release/$t" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1; then
        tail -30 "$log" >&2
        echo "fuzz.sh: $t crashed; the input is in $artifacts/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    printf '%-20s %12s %8s\n' "$t" "${runs:-?}" "$seconds"
    rm -f "$log"
done
