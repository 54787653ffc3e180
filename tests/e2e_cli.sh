#!/usr/bin/env bash
# The command line as users meet it: help, version, usage errors (exit 2, one line naming the flag),
# missing or bad data and checkpoints (exit 1, one line naming the file), and the benchmark.
source "$(dirname "$0")/lib.sh"

# expect CODE CMD...: run CMD, require exit CODE and (for errors) exactly one line on stderr
expect() {
  local want=$1; shift
  set +e
  "$@" > "$TMP/out" 2> "$TMP/err"
  local code=$?
  set -e
  [ "$code" -eq "$want" ] || fail "exit $code (wanted $want): $* -- $(cat "$TMP/err")"
  if [ "$want" -ne 0 ]; then
    [ "$(wc -l < "$TMP/err")" -eq 1 ] || fail "not one line on stderr: $* -- $(cat "$TMP/err")"
  fi
}

expect 0 "$BIN" --help
grep -q -- "--batch-size" "$TMP/out" && grep -q "resume" "$TMP/out" || fail "--help lacks the flags"
expect 0 "$BIN" --version
grep -q "^resnet_mpi [0-9]" "$TMP/out" || fail "--version: $(cat "$TMP/out")"
pass "help and version"

expect 2 "$BIN" --no-such-flag
grep -q -- "--no-such-flag" "$TMP/err" || fail "unknown flag not named"
expect 2 "$BIN" train --lr abc
grep -q -- "--lr" "$TMP/err" || fail "bad --lr not named"
expect 2 "$BIN" --depth 21
expect 2 "$BIN" --batch-size 0
expect 2 "$BIN" --optimizer rmsprop
expect 2 "$BIN" --bn-eval running
expect 2 "$BIN" eval
expect 2 "$BIN" bench --checkpoint x
pass "usage errors: exit 2 with one line naming the flag"

expect 1 "$BIN" --data "$TMP/nowhere" --progress never --checkpoint-dir "$TMP/none"
grep -q "$TMP/nowhere" "$TMP/err" && grep -q "get-cifar10.sh" "$TMP/err" || fail "missing data: $(cat "$TMP/err")"
mkdir -p "$TMP/cifar"
head -c 1000 /dev/zero > "$TMP/cifar/data_batch_1.bin"
expect 1 "$BIN" --data "$TMP/cifar" --progress never --checkpoint-dir "$TMP/none"
grep -q "data_batch_1.bin" "$TMP/err" || fail "bad data file not named: $(cat "$TMP/err")"
pass "missing and corrupt data: exit 1, one line naming the file"

echo "not hdf5" > "$TMP/bad.h5"
expect 1 "$BIN" eval --checkpoint "$TMP/bad.h5"
grep -q "bad.h5" "$TMP/err" || fail "bad checkpoint not named"
expect 1 "$BIN" eval --checkpoint "$TMP/missing.h5"
"$BIN" "${FM_SMALL[@]}" --limit-train 256 --batch-size 64 --max-steps 1 --threads 1 --quiet \
  --checkpoint-dir "$TMP/ck" >/dev/null || fail "tiny training run"
size=$(stat -c %s "$TMP/ck/last.h5")
head -c $((size / 2)) "$TMP/ck/last.h5" > "$TMP/half.h5"
expect 1 "$BIN" eval --checkpoint "$TMP/half.h5"
expect 1 "$BIN" --dataset fashion-mnist --resume "$TMP/half.h5" --progress never
expect 0 "$BIN" eval --checkpoint "$TMP/ck/last.h5" --json
grep -q '"accuracy":' "$TMP/out" && grep -q '"confusion":' "$TMP/out" || fail "eval --json: $(cat "$TMP/out")"
pass "bad checkpoints: exit 1, one line; a good one evaluates (--json)"

expect 0 "$BIN" bench --batch-size 16 --steps 2 --warmup 1 --threads 1 --eval-images 200
grep -q "images/s" "$TMP/out" && grep -q "GFLOP/s" "$TMP/out" && grep -q "^eval: .* over 200 images" "$TMP/out" && grep -q "peak memory" "$TMP/out" &&
  grep -Eq "^peak: [1-9][0-9.]* GFLOP/s measured FMA peak of the 1 rank\(s\) x 1 thread\(s\) \((avx512|avx2|scalar)\); train [0-9.]+%" "$TMP/out" || fail "bench: $(cat "$TMP/out")"
# the step split on 1 rank: nothing to reduce, so no allreduce time; compute and optimizer fill the step
grep -Eq "^step: [0-9.]+ ms; compute [1-9][0-9.]*, allreduce 0\.00, optimizer [0-9.]+ ms \(mean over ranks\); allreduce least 0\.00, most 0\.00 ms over ranks; gradient reduced in one allreduce after the backward$" "$TMP/out" ||
  fail "bench: no step split: $(cat "$TMP/out")"
pass "bench: $(grep '^train:' "$TMP/out")"
# --profile: the step's layers (forward and backward), then the evaluation forward's (forward only)
expect 0 "$BIN" bench --batch-size 16 --steps 1 --warmup 0 --threads 1 --eval-images 100 --profile
step_rows=$(sed -n '/^profile (per step; 1 of them/,/^  total (forward + backward)/p' "$TMP/out")
eval_rows=$(sed -n '/^evaluation profile (per evaluation forward; 2 of them/,/^  total (forward) /p' "$TMP/out")
grep -q "conv 3x3/1  16->16  32x32 backward" <<<"$step_rows" || fail "bench --profile: no step profile: $(cat "$TMP/out")"
grep -q "conv 3x3/1  16->16  32x32 forward" <<<"$eval_rows" && grep -q "batchnorm (+relu) forward" <<<"$eval_rows" ||
  fail "bench --profile: no evaluation profile: $(cat "$TMP/out")"
! grep -q "backward" <<<"$eval_rows" || fail "bench --profile: a backward in the evaluation profile: $eval_rows"
pass "bench --profile: per-layer tables of the step and of the evaluation forward"

# The kernel path: chosen at start-up from the CPU (flags read here from /proc/cpuinfo, apart from the
# program's own check), forced with RESNET_ISA to any path the CPU runs, refused (exit 2, one line) for a
# path it lacks or a name that is none, in every subcommand. The layer tests check each path's results.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
runs=(generic)
has avx2 fma && runs=(avx2 "${runs[@]}")
has avx2 fma avx512f avx512bw avx512vl avx512dq && runs=(avx512 "${runs[@]}")
header_path() {   # the path the bench header names
  sed -n 's/^resnet_mpi bench: .*, direct convolutions \(.*\)$/\1/p' "$TMP/out" |
    sed 's/, Winograd F(2x2,3x3)$//; s/^none (im2col + BLIS)$/generic/'
}
header_winograd() { grep -c '^resnet_mpi bench: .*, Winograd F(2x2,3x3)$' "$TMP/out" || true; }
BENCH1=(bench --batch-size 8 --steps 1 --warmup 0 --threads 1 --eval-images 0)
expect 0 "$BIN" "${BENCH1[@]}"
[ "$(header_path)" = "${runs[0]}" ] || fail "default path $(header_path), the fastest this CPU runs is ${runs[0]}"
for isa in "${runs[@]}"; do
  RESNET_ISA=$isa expect 0 "$BIN" "${BENCH1[@]}"
  [ "$(header_path)" = "$isa" ] || fail "RESNET_ISA=$isa ran $(header_path)"
done
for isa in avx512 avx2; do
  [[ " ${runs[*]} " == *" $isa "* ]] && continue
  RESNET_ISA=$isa expect 2 "$BIN" "${BENCH1[@]}"
  grep -q "RESNET_ISA=$isa: this CPU lacks" "$TMP/err" || fail "RESNET_ISA=$isa: $(cat "$TMP/err")"
done
# Winograd F(2x2,3x3) on the SIMD paths (not generic), unless RESNET_WINOGRAD=0; any value but 0 and 1 refused
for isa in "${runs[@]}"; do
  RESNET_ISA=$isa expect 0 "$BIN" "${BENCH1[@]}"
  want=1; [ "$isa" = generic ] && want=0
  [ "$(header_winograd)" = "$want" ] || fail "RESNET_ISA=$isa: Winograd named $(header_winograd) times, want $want"
  RESNET_ISA=$isa RESNET_WINOGRAD=0 expect 0 "$BIN" "${BENCH1[@]}"
  [ "$(header_winograd)" = 0 ] && [ "$(header_path)" = "$isa" ] || fail "RESNET_WINOGRAD=0 on $isa: $(head -1 "$TMP/out")"
done
RESNET_WINOGRAD=yes expect 2 "$BIN" "${BENCH1[@]}"
[ "$(wc -l <"$TMP/err")" = 1 ] && grep -q "RESNET_WINOGRAD: 'yes' is neither 0" "$TMP/err" ||
  fail "RESNET_WINOGRAD=yes: $(cat "$TMP/err")"
RESNET_ISA=sse2 expect 2 "$BIN" "${BENCH1[@]}"
grep -q "RESNET_ISA=sse2: 'sse2' is not a kernel path" "$TMP/err" || fail "RESNET_ISA=sse2: $(cat "$TMP/err")"
RESNET_ISA=sse2 expect 2 "$BIN" eval --checkpoint "$TMP/ck/last.h5"
RESNET_ISA=sse2 expect 2 "$BIN" "${FM_SMALL[@]}" --limit-train 256 --batch-size 64 --max-steps 1 --threads 1 \
  --checkpoint-dir "$TMP/isa"
grep -q "RESNET_ISA" "$TMP/err" || fail "train: RESNET_ISA not named: $(cat "$TMP/err")"
pass "kernel paths: default ${runs[0]}; RESNET_ISA runs ${runs[*]}, refuses the others; Winograd on avx512 unless RESNET_WINOGRAD=0"
