#!/usr/bin/env bash
# Fuzz the e2ee crate: every target for a bounded time, failing if any finds a crash.
#
#   crates/e2ee/fuzz/run.sh [SECONDS_PER_TARGET]        (default 30)
#
# Installs cargo-fuzz if missing. cargo-fuzz passes nightly-only rustc flags (-Z...);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, so no nightly is needed.
# Environment: CARGO_TARGET_DIR (default: target/ here), FUZZ_SANITIZER (address, the
# default, or none), FUZZ_TARGETS (default: all targets). Corpora accumulate in corpus/<target>,
# crashes land in artifacts/<target> (both git-ignored).
set -euo pipefail

seconds="${1:-30}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets="${FUZZ_TARGETS:-decrypt_frame mls_message}"

cargo fuzz build --sanitizer "$sanitizer"
for target in $targets; do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${seconds}s (sanitizer: $sanitizer)"
    # A crash, a leak, a timeout (>10 s on one input) or running out of memory fails the run.
    cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
done
echo "== fuzzing passed: no crash in ${seconds}s per target"
