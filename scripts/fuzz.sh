#!/usr/bin/env bash
# Fuzzes the file readers with libFuzzer (clang, AddressSanitizer + UndefinedBehaviorSanitizer):
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
# TARGET: cifar10 (batch records, batches.meta.txt), idx (IDX pairs, plain or gzip), checkpoint (HDF5 from
# a memory image) or all. Builds in build-fuzz (CC=clang meson setup ... -Dfuzz=true) and runs each target
# for SECONDS on its committed seeds (tests/fuzz/corpus/TARGET) plus the inputs earlier runs kept
# (build-fuzz/corpus/TARGET). Prints "fuzz TARGET: N executions in S s, ..." (the counts the README
# quotes) and ends non-zero when a crash, hang, leak, sanitizer report or error message that breaks the
# readers' contract (one line naming the file) is ours.
#
# libhdf5 1.10.8 itself crashes, hangs or leaks on some malformed files (checkpoints of format_version 1,
# which have no checksums, reach its unchecked parsers). libFuzzer therefore runs in fork mode, which
# keeps going after a crash and saves the input in build-fuzz/crashes/TARGET; each saved input is then
# run again and judged by the first stack frame that is neither the sanitizers', libFuzzer's nor libc's:
# in libhdf5 it is reported as libhdf5's and does not fail the run; anywhere else (our code, the
# harness's contract check) it fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/fuzz.sh cifar10|idx|checkpoint|all SECONDS [libFuzzer options]" >&2; exit 2; }
target=$1 seconds=$2
shift 2
case "$target" in
  all) targets=(cifar10 idx checkpoint) ;;
  cifar10 | idx | checkpoint) targets=("$target") ;;
  *) echo "scripts/fuzz.sh: unknown target '$target' (cifar10, idx, checkpoint or all)" >&2; exit 2 ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "scripts/fuzz.sh: SECONDS must be a positive integer" >&2; exit 2; }
command -v clang >/dev/null || { echo "scripts/fuzz.sh: needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

build="${RESNET_FUZZ_BUILD:-build-fuzz}"   # another folder keeps a long run apart from short ones
if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" --buildtype=debugoptimized -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false >/dev/null
fi
ninja -C "$build" -j2 tests/fuzz/fuzz_cifar10 tests/fuzz/fuzz_idx tests/fuzz/fuzz_checkpoint >/dev/null

# Leaks are errors too, except those inside libhdf5 on malformed files (tests/fuzz/lsan.supp says why).
# An allocation over 1 GiB fails (returns NULL) as on a machine without that memory: libhdf5 sizes some
# allocations by lengths read from the file (a variable-length string of 3.8 GB in a format-1 file) and
# handles the failure as an error; the readers must too.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=1024
export LSAN_OPTIONS=suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# culprit REPORT: "libhdf5" or "ours", by the first stack frame that is not the sanitizers', libFuzzer's
# or libc's (a UBSan report is always ours: only our code is instrumented)
culprit() {
  awk '
    /runtime error:/ { print "ours"; exit }
    /^ *#[0-9]+ 0x/ {
      if ($0 ~ /__sanitizer|__asan|__lsan|__ubsan|__interceptor|fuzzer::|libc\.so|ld-linux|libstdc\+\+/) next
      if ($0 ~ / in (malloc|calloc|realloc|free|abort|raise|_start)( |$)/) next
      print ($0 ~ /libhdf5/ ? "libhdf5" : "ours"); found = 1; exit
    }
    END { if (!found) print "ours" }' "$1"
}
# where REPORT: the first libhdf5 function named in the stack, for the summary
where() { sed -n 's/^ *#[0-9]* 0x[0-9a-f]* in \(H5[A-Za-z0-9_]*\) .*libhdf5.*/\1/p' "$1" | head -n 1; }

status=0
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t crashes=$build/crashes/$t log=$build/fuzz-$t.log
  mkdir -p "$corpus" "$crashes"
  before=$(find "$crashes" -type f | sort)
  set +e
  "$build/tests/fuzz/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$seconds" -artifact_prefix="$crashes/" -timeout=10 -rss_limit_mb=2048 "$@" \
    "$corpus" "tests/fuzz/corpus/$t" > "$log" 2>&1
  code=$?
  set -e
  runs=$(grep -E '^#[0-9]+: ' "$log" | tail -n 1 | sed -n 's/^#\([0-9]*\): .*/\1/p')
  # fork mode ends with the exit code of the last crash it ignored: only a run without statistics failed
  if [ -z "$runs" ] || ! grep -q "^INFO: exiting:" "$log"; then
    echo "fuzz $t: libFuzzer failed (exit $code), log $log:" >&2
    tail -n 20 "$log" >&2
    status=1
    continue
  fi
  ours=0 theirs=0
  for input in $(comm -13 <(echo "$before") <(find "$crashes" -type f | sort)); do
    report=$input.report
    [[ "$input" == *.report ]] && continue
    "$build/tests/fuzz/fuzz_$t" -timeout=10 -rss_limit_mb=2048 "$input" > "$report" 2>&1 || true
    if [ "$(culprit "$report")" = libhdf5 ]; then
      theirs=$((theirs + 1))
      echo "fuzz $t: libhdf5 fails on $input (in $(where "$report"); not ours, see $report)"
    else
      ours=$((ours + 1))
      echo "fuzz $t: OUR BUG on $input:" >&2
      grep -E "ERROR|runtime error|SUMMARY|#[0-9]+ 0x|fuzz:" "$report" | head -n 25 >&2
    fi
  done
  echo "fuzz $t: $runs executions in $seconds s, $ours crash(es) of ours, $theirs inside libhdf5"
  [ "$ours" -eq 0 ] || status=1
done
exit "$status"
