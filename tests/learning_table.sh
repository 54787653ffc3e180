#!/usr/bin/env bash
# scripts/learning-table.sh, which writes the README's learning tables, on a short real run (Fashion-MNIST,
# ResNet-8, --ema, stopped and resumed once): one row for each checkpoint x weights x BN statistics x
# TTA, each the number `resnet_mpi eval` prints for the command the script shows; then the validation
# history of the resumed run read as one run, and its training time over both processes.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
run=("${FM_QUICK[@]}" --limit-train 512 --batch-size 64 --eval-every 4 --threads 1 --ema 0.5
     --checkpoint-dir "$TMP/ck")
"$BIN" train "${run[@]}" --max-steps 8 > "$TMP/train1.out" 2>&1 || fail "first run: $(tail -n 3 "$TMP/train1.out")"
"$BIN" train "${run[@]}" --max-steps 12 --resume auto > "$TMP/train2.out" 2>&1 ||
  fail "resumed run: $(tail -n 3 "$TMP/train2.out")"

RESNET_MPI=$BIN "$ROOT/scripts/learning-table.sh" --data "$FM_DIR" --threads 1 "$TMP/ck" > "$TMP/table" 2> "$TMP/commands" ||
  fail "learning-table.sh: $(tail -n 3 "$TMP/commands")"
rows=$(grep -c '^| \(last\|best\)\.h5 | \(raw\|ema\) | \(batch\|reference\) | \(none\|flip\) | 0\.[0-9]\{4\} | 0\.[0-9]\{4\} |$' "$TMP/table" || true)
[ "$rows" -eq 16 ] || fail "expected 16 rows (2 checkpoints x 2 weights x 2 BN x 2 TTA), got $rows: $(cat "$TMP/table")"
[ "$(grep -c '^  \$ ' "$TMP/commands")" -eq 16 ] || fail "one eval command per row expected: $(cat "$TMP/commands")"

# a row is what its command prints: the EMA weights with reference statistics and TTA, on last.h5
row=$(grep '^| last\.h5 | ema | reference | flip |' "$TMP/table")
cmd=$(grep -- '--checkpoint [^ ]*/last\.h5 .*--weights ema --bn-eval reference --tta flip' "$TMP/commands" | sed 's/^  \$ //')
[ -n "$cmd" ] || fail "no command for the last.h5 ema reference flip row"
# shellcheck disable=SC2086  # the command line as the script printed it (no spaces inside its words)
json=$($cmd)
want=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %.4f | %.4f |" % (r["accuracy"], r["other_protocol"]["accuracy"]))' "$json")
[[ "$row" == *"$want" ]] || fail "row '$row' is not what its command prints ('$want')"
pass "16 rows, each from its eval command: $row"

# the history: 3 validations (steps 4, 8, 12) across the resume, both series; the time of both processes
grep -q '^val_acc: 3 checks, .* last [0-9.]* at step 12;' "$TMP/table" || fail "history of the trained weights: $(cat "$TMP/table")"
grep -q '^val_acc_ema: 3 checks, ' "$TMP/table" || fail "history of the moving average: $(cat "$TMP/table")"
grep -q '^training time over all its processes (resumes): [0-9]* s (.*), the last process [0-9]* s; stopped: max-steps$' "$TMP/table" ||
  fail "training time: $(tail -n 2 "$TMP/table")"
pass "the resumed run's history read as one run, and its training time: $(tail -n 1 "$TMP/table")"
