#!/usr/bin/env bash
# CI smoke run of the fuzz targets: builds every target (cargo fuzz, nightly, AddressSanitizer
# and debug assertions), then runs each for a few seconds over its committed corpus. Any crash,
# leak, timeout or out-of-memory fails the script (libFuzzer exits non-zero and leaves the
# input in fuzz/artifacts/<target>/).
#
#   fuzz/smoke.sh              # FUZZ_SECONDS per target (default 8)
#   FUZZ_SECONDS=60 fuzz/smoke.sh mapping json_scanner
#   fuzz/smoke.sh --build-only # install and build only (.ci/run starts this early)
#
# The corpora are not modified: new inputs go to a scratch folder that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")"
# Its own target folder (fuzz/target): never the main build's, whose lock it would wait on.
unset CARGO_TARGET_DIR

build_only=0
if [ "${1:-}" = "--build-only" ]; then
  build_only=1
  shift
fi

SECONDS_PER_TARGET="${FUZZ_SECONDS:-8}"
# No debug info in the fuzz binaries (cargo fuzz asks for line tables): each target links all
# of wharf with AddressSanitizer, and six such binaries with line tables filled the disk of a
# CI machine while the tests ran (lld died of SIGBUS writing its output). Crash reports still
# name the functions (the symbol table stays); fuzz/README.md's long runs keep line tables.
export RUSTFLAGS="${FUZZ_RUSTFLAGS--Cdebuginfo=0 -Cstrip=debuginfo}"
CARGO_FUZZ_VERSION=0.13.2

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
build_start=$(date +%s)
# Once more if the first try fails: cargo keeps what was built, so a link that failed for a
# passing reason (the disk full while the tests ran, memory) is all that is done again.
if ! cargo +nightly fuzz build -O --debug-assertions; then
  echo "== the fuzz build failed; disk and memory now:"
  df -h . /tmp || true
  free -m || true
  echo "== building again"
  cargo +nightly fuzz build -O --debug-assertions
fi
echo "== built in $(( $(date +%s) - build_start ))s"
du -sh target 2>/dev/null || true
if [ "$build_only" = 1 ]; then
  exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "== $t: ${SECONDS_PER_TARGET}s over corpus/$t"
  # The scratch folder first: new inputs are written there, the committed corpus is only read.
  if ! cargo +nightly fuzz run -O --debug-assertions "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 2>"$scratch/$t.log"; then
    failed+=("$t")
    tail -n 60 "$scratch/$t.log"
  else
    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$scratch/$t.log" | tail -n 2 || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "OK: ${#targets[@]} targets, no crash"
