#!/usr/bin/env bash
# Self-checking checkpoints: a damaged last.h5 is caught by its checksums. `--resume auto` then falls
# back to the newest checkpoint that passes (a --keep snapshot or best.h5) and says so; with none left
# it fails rather than start over; eval names the damaged dataset.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
COMPARE=${COMPARE_MODELS:?meson passes compare_models}
# 1024 records at batch 64: 16 steps an epoch, so no validation (and no best.h5) before step 16; a
# checkpoint and a snapshot every 4 steps
common=("${FM_QUICK[@]}" --limit-train 1024 --batch-size 64 --eval-every epoch --checkpoint-every 4 --keep 3
        --threads 1 --quiet)

# flip FILE OFFSET: change one byte in place (XOR 0x55)
flip() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf '%b' "\\x$(printf %02x $((b ^ 0x55)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
size_of() { stat -c %s "$1"; }
# header_of FILE DATASET: the byte offset of a dataset's object header
header_of() { h5ls -v "$1/$2" | sed -n 's/^ *Location: *[0-9]*:\([0-9]*\)$/\1/p'; }

# 1. a run of 10 steps (snapshots at steps 4 and 8, last.h5 at 10), and the same run stopped at step 8
mpi 2 "${common[@]}" --max-steps 10 --checkpoint-dir "$TMP/full" >/dev/null || fail "10 steps"
mpi 2 "${common[@]}" --max-steps 8 --checkpoint-dir "$TMP/ck" >/dev/null || fail "8 steps"
[ -f "$TMP/ck/step-00000008.h5" ] && [ -f "$TMP/ck/step-00000004.h5" ] || fail "no snapshots: $(ls "$TMP/ck")"
# damage last.h5, and the newest snapshot with it (as when last.h5 is still the snapshot's own file, a
# hard link, after a kill): the fallback must skip it for step 4
flip "$TMP/ck/last.h5" $(($(header_of "$TMP/ck/last.h5" model/fc.weight) + 40))
flip "$TMP/ck/step-00000008.h5" $(($(size_of "$TMP/ck/step-00000008.h5") / 2))

# eval of the damaged file: exit 1, one line naming the file and what is damaged
set +e
"$BIN" eval --checkpoint "$TMP/ck/last.h5" --data "$FM_DIR" --dataset fashion-mnist > "$TMP/eval.out" 2> "$TMP/eval.err"
code=$?
set -e
[ "$code" -eq 1 ] || fail "eval of a damaged file: exit $code"
[ "$(wc -l < "$TMP/eval.err")" -eq 1 ] && grep -q "$TMP/ck/last.h5: /model/fc.weight: checksum mismatch" "$TMP/eval.err" ||
  fail "eval of a damaged file: $(cat "$TMP/eval.err")"
pass "eval of a damaged checkpoint: $(cat "$TMP/eval.err")"

# 2. resume auto: falls back to step 4 (step 8 shares the damage), says so, and continues to step 10
# bit for bit as the run that never stopped
mpi 2 "${common[@]}" --max-steps 10 --checkpoint-dir "$TMP/ck" --resume auto >/dev/null 2> "$TMP/resume.err" ||
  fail "resume with a damaged last.h5: $(cat "$TMP/resume.err")"
grep -q "warning: $TMP/ck/last.h5: .*checksum mismatch.*; resuming from $TMP/ck/step-00000004.h5 instead" \
  "$TMP/resume.err" || fail "no fallback message: $(cat "$TMP/resume.err")"
diff=$("$COMPARE" "$TMP/ck/last.h5" "$TMP/full/last.h5") || fail "compare"
[ "$diff" = 0 ] || fail "resumed from the snapshot, the model differs from the uninterrupted run by $diff"
h5diff "$TMP/ck/last.h5" "$TMP/full/last.h5" /optimizer /optimizer || fail "optimizer state differs"
pass "damaged last.h5: fell back to step-00000004.h5, reached step 10 bitwise equal to the uninterrupted run"

# 3. no good checkpoint left: the resume fails (exit 1) and names the damage, it does not start over
"$BIN" "${common[@]}" --max-steps 4 --keep 0 --checkpoint-dir "$TMP/lone" >/dev/null || fail "4 steps"
flip "$TMP/lone/last.h5" 1000
cp "$TMP/lone/last.h5" "$TMP/lone.before"
set +e
"$BIN" "${common[@]}" --max-steps 8 --keep 0 --checkpoint-dir "$TMP/lone" --resume auto > "$TMP/lone.out" 2> "$TMP/lone.err"
code=$?
set -e
[ "$code" -eq 1 ] || fail "no good checkpoint: exit $code: $(cat "$TMP/lone.err")"
grep -q "no best.h5 or step-\*.h5 in $TMP/lone passes its checksums either" "$TMP/lone.err" &&
  grep -q "$TMP/lone/last.h5: .*checksum mismatch" "$TMP/lone.err" || fail "no good checkpoint: $(cat "$TMP/lone.err")"
cmp -s "$TMP/lone/last.h5" "$TMP/lone.before" || fail "the damaged last.h5 was replaced"
pass "no good checkpoint: exit 1, damage named, nothing overwritten"
