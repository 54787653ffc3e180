#!/usr/bin/env bash
# Bad input of every kind (flags, environment, folders, data files, checkpoints, signals), on 1 rank and a
# representative part on 3: each must end in its documented exit code (2: fix the command line, 1: a file
# or the run failed) with one error line that names the file, object or flag, and never hang (every case
# runs under `timeout`: a FIFO in place of a file used to block open() for good). Checkpoints are made bad
# by editing one value of a good one with tests/h5poke.c. The issue-13 defect each case guards is in [].
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
H5POKE=${H5POKE:?meson passes the h5poke helper}
LIMIT=${RESNET_CASE_LIMIT:-90}   # seconds a case may take; only a hang comes near it
cases=0

# A small Fashion-MNIST cut, plain IDX: 600 train and 100 test images, so that every run loads in no time.
SMALL=$TMP/small
mkdir -p "$SMALL"
idx_cut() {   # idx_cut PREFIX COUNT: images and labels of the package's PREFIX files, cut to COUNT
  { be32 2051; be32 "$2"; be32 28; be32 28; first_bytes "$FMNIST/$1-images-idx3-ubyte.gz" 16 $(($2 * 784)); } \
    > "$SMALL/$1-images-idx3-ubyte"
  { be32 2049; be32 "$2"; first_bytes "$FMNIST/$1-labels-idx1-ubyte.gz" 8 "$2"; } > "$SMALL/$1-labels-idx1-ubyte"
}
idx_cut train 600
idx_cut t10k 100
# the seed recipe: its checkpoints have no moving average (/ema), which one case needs
S=(--dataset fashion-mnist --data "$SMALL" --val-size 100 --limit-train 64 --batch-size 8 --threads 1
   --progress never --recipe seed)
cd "$TMP"   # the default --checkpoint-dir (checkpoints) of cases that fail before using it
# a process started without mpirun need not start Open MPI's helper daemon: 0.3-0.5 s less a case
export OMPI_MCA_ess_singleton_isolated=1
variant() { rm -rf "${TMP:?}/$1"; cp -r "$SMALL" "$TMP/$1"; echo "$TMP/$1"; }   # a copy of the small set to spoil

# check NP CODE TEXT CMD...: CMD on NP ranks must exit CODE within LIMIT seconds, and stderr must hold exactly
# one error line (warnings aside; under mpirun also Open MPI's own report) that contains TEXT.
# run_limited NP CMD...: CMD on NP ranks under the time limit, stdout and stderr into $TMP/out and
# $TMP/err; fails the test when it hangs, else sets the caller's (local) code to its exit code
run_limited() {
  local np=$1
  shift
  local launch=()
  [ "$np" -gt 1 ] && launch=("${MPIRUN[@]}" -np "$np")
  set +e
  timeout -k 5 "$LIMIT" "${launch[@]}" "$@" > "$TMP/out" 2> "$TMP/err"
  code=$?
  set -e
  [ "$code" -ne 124 ] && [ "$code" -ne 137 ] || fail "hung for $LIMIT s on $np rank(s): $*"
}
check() {
  local np=$1 want=$2 text=$3 code
  shift 3
  run_limited "$np" "$@"
  [ "$code" -eq "$want" ] || fail "exit $code (wanted $want) on $np rank(s): $* -- $(cat "$TMP/err")"
  grep -v '^resnet_mpi: warning:' "$TMP/err" | grep '^resnet_mpi: ' > "$TMP/msg" || true
  [ "$(wc -l < "$TMP/msg")" -eq 1 ] || fail "not one error line on $np rank(s): $* -- $(cat "$TMP/err")"
  if [ "$np" -eq 1 ]; then
    [ "$(grep -vc '^resnet_mpi: warning:' "$TMP/err")" -eq 1 ] ||
      fail "more than the error on stderr: $* -- $(cat "$TMP/err")"
  fi
  grep -qF -- "$text" "$TMP/msg" || fail "message lacks '$text' on $np rank(s): $* -- $(cat "$TMP/msg")"
  cases=$((cases + 1))
}

# ---- good checkpoints to spoil --------------------------------------------------------------------------
"$BIN" "${S[@]}" --max-steps 2 --eval-every 1 --checkpoint-dir "$TMP/good" > /dev/null || fail "good run"
GOOD=$TMP/good/last.h5
# mid-epoch: 5 of the 8 batches of 8 done
out=$("$BIN" "${S[@]}" --max-steps 5 --eval-every 100 --checkpoint-dir "$TMP/mid" 2>&1) ||
  fail "mid-epoch run: $out"
echo "$out" | grep -q "^stopped: max-steps after 5 steps (epoch 1); no validation ran$" ||
  fail "[10] end-of-run line without validation: $(echo "$out" | grep stopped)"
pass "[10] a run without validation says so (not 'best validation accuracy: -1.0000 at step 0')"

# poke NAME OBJECT VALUE...: a copy of the good checkpoint at $TMP/NAME.h5 with one value changed
poke() { local name=$1; shift; cp "$GOOD" "$TMP/$name.h5"; "$H5POKE" "$TMP/$name.h5" "$@" || fail "h5poke $*"; }
poke nan-weight '/model/conv1.weight[5]' nan
poke inf-weight '/model/conv1.weight[0]' inf
poke neg-var '/optimizer/exp_avg_sq/fc.bias[1]' -1
poke inf-moment '/optimizer/exp_avg/module2.0.conv1.weight[7]' -inf
poke neg-step /train@step -5
poke huge-epoch /train@epoch 1000000000000
poke neg-batch /train@batch_in_epoch -1
poke opt-step /optimizer@step 7
poke best-acc /train@best_val_acc 2
poke nan-time /train@elapsed_s nan
poke neg-count /train@running_loss_count -1
poke neg-lr /optimizer@lr -1
poke beta2 /optimizer@beta2 1.5
poke long-history /history/step --extend 3
poke config-batch /config@batch-size 0
poke config-data /config@data "$TMP/moved-away"
poke no-bias /model/fc.bias --delete
# --ema: a good checkpoint with a moving average (/ema), spoilt the same way
"$BIN" "${S[@]}" --max-steps 2 --eval-every 1 --ema 0.9 --checkpoint-dir "$TMP/good-ema" > /dev/null || fail "good --ema run"
poke_ema() { local name=$1; shift; cp "$TMP/good-ema/last.h5" "$TMP/$name.h5"; "$H5POKE" "$TMP/$name.h5" "$@" || fail "h5poke $*"; }
poke_ema ema-nan '/ema/fc.bias[1]' nan
poke_ema ema-count /ema@n_averaged 3
poke_ema ema-gone /ema --delete
poke_ema ema-decay /ema@decay 0.5
head -c 3000 "$GOOD" > "$TMP/truncated.h5"
echo "not hdf5" > "$TMP/text.h5"
mkfifo "$TMP/fifo.h5" "$TMP/fifo.jsonl"
mkdir -p "$TMP/folder.h5"
touch "$TMP/plain-file"

# resume_case NP CODE TEXT NAME [FLAGS...]: --resume auto from $TMP/NAME.h5 as DIR/last.h5; a refused
# file must be left as it was (the old code wrote a new last.h5 before crashing on it)
resume_case() {
  local np=$1 code=$2 text=$3 name=$4
  shift 4
  local dir=$TMP/resume-$name-$np
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$TMP/$name.h5" "$dir/last.h5"
  check "$np" "$code" "$text" "$BIN" "${S[@]}" --max-steps 6 --checkpoint-dir "$dir" --resume auto "$@"
  cmp -s "$TMP/$name.h5" "$dir/last.h5" || fail "$name: the refused last.h5 was replaced"
}

# ---- the cases, by kind; each function takes the number of ranks ----------------------------------------
flag_cases() {
  local np=$1
  check "$np" 2 "--batch-size" "$BIN" "${S[@]}" --batch-size 0
  check "$np" 2 "--no-such-flag" "$BIN" --no-such-flag
  check "$np" 2 "--batch-size 128 is larger than the 64 training records" "$BIN" "${S[@]}" --batch-size 128  # [10]
  check "$np" 2 "--limit-train" "$BIN" "${S[@]}" --limit-train 100000                                       # [10]
  RESNET_FAULT_STEP=abc check "$np" 2 "RESNET_FAULT_STEP" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/f-$np"   # [9]
  check "$np" 2 "cannot evaluate it with --arch paper" "$BIN" eval --checkpoint "$GOOD" --arch paper        # [10]
  check "$np" 2 "--weights ema: $GOOD has no moving average (/ema)" "$BIN" eval --checkpoint "$GOOD" --weights ema
}
flag_cases_one_rank() {
  check 1 2 "--lr" "$BIN" "${S[@]}" --lr -1
  check 1 2 "--ema: '1' is not 0 (off) or a number between 0 and 1" "$BIN" "${S[@]}" --ema 1
  check 1 2 "--ema: '-0.1'" "$BIN" "${S[@]}" --ema -0.1
  check 1 2 "--ema: 'x'" "$BIN" "${S[@]}" --ema x
  check 1 2 "--depth" "$BIN" "${S[@]}" --depth 21
  check 1 2 "--overwrite takes no value" "$BIN" "${S[@]}" --overwrite=yes
  check 1 2 "--batch-size 65536 is larger" "$BIN" "${S[@]}" --limit-train 0 --batch-size 65536              # [10]
  check 1 2 "--val-size" "$BIN" "${S[@]}" --val-size 100000                                                 # [10]
  check 1 2 "--val-size" "$BIN" eval --checkpoint "$GOOD" --split val --val-size 100000                     # [10]
  check 1 2 "--checkpoint" "$BIN" eval
  RESNET_FAULT_STEP=" 1" check 1 2 "RESNET_FAULT_STEP" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/f2"          # [9]
  RESNET_FAULT_RANK=7 check 1 2 "RESNET_FAULT_RANK" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/f3"
  check 1 2 "cannot resume it with --arch paper" "$BIN" "${S[@]}" --arch paper --resume "$GOOD" --checkpoint-dir "$TMP/f4"
}
flag_cases_three_ranks() {
  check 3 2 "--batch-size 2 is smaller than the 3 ranks" "$BIN" "${S[@]}" --batch-size 2
  check 3 2 "--batch-size" "$BIN" "${S[@]}" --batch-size 31   # the epoch's last batch: 2 samples for 3 ranks
}

folder_cases() {
  local np=$1
  check "$np" 2 "--checkpoint-dir $TMP/plain-file: not a folder" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/plain-file"  # [8]
  # a used folder: refused without --resume or --overwrite, its checkpoints untouched               [6]
  rm -rf "$TMP/used-$np"
  cp -r "$TMP/good" "$TMP/used-$np"
  check "$np" 2 "--overwrite" "$BIN" "${S[@]}" --max-steps 1 --checkpoint-dir "$TMP/used-$np"
  grep -qF -- "--resume auto" "$TMP/msg" || fail "[6] the refusal does not mention --resume auto"
  cmp -s "$TMP/good/last.h5" "$TMP/used-$np/last.h5" && cmp -s "$TMP/good/best.h5" "$TMP/used-$np/best.h5" ||
    fail "[6] a refused run changed the folder's checkpoints"
  check "$np" 1 "$TMP/fifo.jsonl: metrics log is a FIFO that no process reads" \
    "$BIN" "${S[@]}" --checkpoint-dir "$TMP/m-$np" --metrics "$TMP/fifo.jsonl"                        # [5]
}
folder_cases_one_rank() {
  # [8] with --metrics elsewhere the old run trained first and failed at its first checkpoint
  check 1 2 "--checkpoint-dir" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/plain-file" --metrics "$TMP/elsewhere.jsonl"
  [ ! -e "$TMP/elsewhere.jsonl" ] || fail "[8] the run got as far as the metrics log"
  check 1 2 "$TMP/plain-file is not a folder" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/plain-file/sub"    # [8]
  rm -rf "$TMP/used-best" && mkdir -p "$TMP/used-best" && cp "$TMP/good/best.h5" "$TMP/used-best/"
  check 1 2 "best.h5" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/used-best"                                    # [6]
  check 1 2 "--metrics $TMP/folder.h5" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/m2" --metrics "$TMP/folder.h5"
  check 1 1 "$TMP/nowhere" "$BIN" "${S[@]}" --data "$TMP/nowhere" --checkpoint-dir "$TMP/m3"
  check 1 1 "taken from $TMP/config-data.h5's /config" "$BIN" eval --checkpoint "$TMP/config-data.h5"      # [10]
}

data_cases() {
  local np=$1 d
  d=$(variant fifo-train)
  rm "$d/train-images-idx3-ubyte" && mkfifo "$d/train-images-idx3-ubyte"
  check "$np" 1 "$d/train-images-idx3-ubyte: not a regular file (a FIFO)" "$BIN" "${S[@]}" --data "$d"     # [5]
  # [7] a 28x28 model on a 14x14 set of the same kind
  d=$(variant small14)
  { be32 2051; be32 100; be32 14; be32 14; head -c 19600 /dev/urandom; } > "$d/t10k-images-idx3-ubyte"
  check "$np" 1 "trained on 28x28 images" "$BIN" eval --checkpoint "$GOOD" --data "$d"
}
data_cases_one_rank() {
  local d
  d=$(variant fifo-labels)
  rm "$d/t10k-labels-idx1-ubyte" && mkfifo "$d/t10k-labels-idx1-ubyte"
  check 1 1 "$d/t10k-labels-idx1-ubyte: not a regular file" "$BIN" eval --checkpoint "$GOOD" --data "$d"  # [5]
  d=$(variant bad-magic)
  printf '\0\0\x08\x04' | dd of="$d/train-images-idx3-ubyte" conv=notrunc status=none
  check 1 1 "$d/train-images-idx3-ubyte: bad magic" "$BIN" "${S[@]}" --data "$d"
  d=$(variant count)
  printf '\0\0\x02\x57' | dd of="$d/train-labels-idx1-ubyte" bs=1 seek=4 conv=notrunc status=none   # 599 labels
  check 1 1 "$d/train-labels-idx1-ubyte" "$BIN" "${S[@]}" --data "$d"
  d=$(variant label)
  printf '\x0a' | dd of="$d/t10k-labels-idx1-ubyte" bs=1 seek=20 conv=notrunc status=none
  check 1 1 "$d/t10k-labels-idx1-ubyte: record 12 has label 10" "$BIN" "${S[@]}" --data "$d"
  d=$(variant gz)
  gzip -c "$d/train-labels-idx1-ubyte" | head -c -12 > "$d/train-labels-idx1-ubyte.gz"
  check 1 1 "$d/train-labels-idx1-ubyte.gz: truncated" "$BIN" "${S[@]}" --data "$d"
  d=$(variant folder)
  rm "$d/train-images-idx3-ubyte" && mkdir "$d/train-images-idx3-ubyte"
  check 1 1 "$d/train-images-idx3-ubyte: not a regular file (a folder)" "$BIN" "${S[@]}" --data "$d"
  d=$(variant small14-train)
  { be32 2051; be32 600; be32 14; be32 14; head -c 117600 /dev/urandom; } > "$d/train-images-idx3-ubyte"
  { be32 2051; be32 100; be32 14; be32 14; head -c 19600 /dev/urandom; } > "$d/t10k-images-idx3-ubyte"
  check 1 1 "trained on 28x28 images" "$BIN" "${S[@]}" --data "$d" --resume "$GOOD" --checkpoint-dir "$TMP/d14" # [7]
}

# CIFAR-10 of zeros (a valid set: label 0, black images) as sparse files: the real layout at no cost
cifar() {
  local d=$TMP/$1
  rm -rf "$d" && mkdir -p "$d"
  for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    truncate -s 30730000 "$d/$f.bin"
  done
  echo "$d"
}
C=(--val-size 100 --limit-train 64 --batch-size 8 --threads 1 --progress never)
cifar_cases() {
  local np=$1 d
  d=$(cifar c-fifo)
  rm "$d/data_batch_1.bin" && mkfifo "$d/data_batch_1.bin"
  check "$np" 1 "$d/data_batch_1.bin: not a regular file (a FIFO)" "$BIN" "${C[@]}" --data "$d"           # [5]
}
cifar_cases_one_rank() {
  local d
  d=$(cifar c-meta)
  mkfifo "$d/batches.meta.txt"
  check 1 1 "$d/batches.meta.txt: not a regular file (a FIFO)" "$BIN" "${C[@]}" --data "$d"                 # [5]
  d=$(cifar c-names)
  printf 'a\nb\nc\nd\ne\nf\ng\nh\ni\n' > "$d/batches.meta.txt"
  check 1 1 "$d/batches.meta.txt: 9 class names" "$BIN" "${C[@]}" --data "$d"
  d=$(cifar c-short)
  truncate -s 30729999 "$d/data_batch_2.bin"
  check 1 1 "$d/data_batch_2.bin: size 30729999" "$BIN" "${C[@]}" --data "$d"
  d=$(cifar c-label)
  printf '\x0b' | dd of="$d/test_batch.bin" bs=1 seek=3073 conv=notrunc status=none
  check 1 1 "$d/test_batch.bin: record 1 has label 11" "$BIN" "${C[@]}" --data "$d"
  check 1 1 "$TMP/c-none/data_batch_1.bin" "$BIN" "${C[@]}" --data "$TMP/c-none"
}

checkpoint_cases() {
  local np=$1
  check "$np" 1 "$TMP/fifo.h5: not a regular file (a FIFO)" "$BIN" eval --checkpoint "$TMP/fifo.h5"       # [5]
  check "$np" 1 "$TMP/fifo.h5: not a regular file (a FIFO)" "$BIN" "${S[@]}" --resume "$TMP/fifo.h5"     # [5]
  check "$np" 1 "/model/conv1.weight holds a non-finite value (nan" "$BIN" eval --checkpoint "$TMP/nan-weight.h5"  # [4]
  resume_case "$np" 1 "/model/conv1.weight holds a non-finite value (inf" inf-weight                          # [4]
  grep -q "diverged" "$TMP/msg" && fail "[10] an Inf in the checkpoint is reported as divergence"
  resume_case "$np" 1 "attribute step of /train is -5" neg-step                                                # [3]
  resume_case "$np" 1 "attribute batch_in_epoch of /train is -1" neg-batch                                     # [2]
  resume_case "$np" 1 "/history/step has 3 entries" long-history                                               # [10]
}
checkpoint_cases_one_rank() {
  check 1 1 "$TMP/folder.h5: not a regular file (a folder)" "$BIN" eval --checkpoint "$TMP/folder.h5"
  check 1 1 "$TMP/truncated.h5" "$BIN" eval --checkpoint "$TMP/truncated.h5"
  check 1 1 "$TMP/text.h5: not an HDF5 file" "$BIN" eval --checkpoint "$TMP/text.h5"
  check 1 1 "$TMP/missing.h5: cannot open" "$BIN" eval --checkpoint "$TMP/missing.h5"
  check 1 1 "missing dataset /model/fc.bias" "$BIN" eval --checkpoint "$TMP/no-bias.h5"
  check 1 1 "setting batch-size = '0' in /config" "$BIN" eval --checkpoint "$TMP/config-batch.h5"
  resume_case 1 1 "/optimizer/exp_avg_sq/fc.bias holds a negative value" neg-var                              # [4]
  resume_case 1 1 "/optimizer/exp_avg/module2.0.conv1.weight holds a non-finite value" inf-moment              # [4]
  resume_case 1 1 "attribute epoch of /train is 1000000000000" huge-epoch                                      # [3]
  resume_case 1 1 "attribute step of /optimizer is 7, but /train says 2" opt-step                              # [3]
  resume_case 1 1 "attribute best_val_acc of /train is 2" best-acc                                             # [3]
  resume_case 1 1 "attribute elapsed_s of /train is nan" nan-time                                              # [3]
  resume_case 1 1 "attribute running_loss_count of /train is -1" neg-count                                     # [3]
  resume_case 1 1 "attribute lr of /optimizer is -1" neg-lr                                                    # [3]
  resume_case 1 1 "attribute beta2 of /optimizer is 1.5" beta2                                                 # [3]
  check 1 1 "$TMP/ema-nan.h5: /ema/fc.bias holds a non-finite value (nan" "$BIN" eval --checkpoint "$TMP/ema-nan.h5"
  check 1 1 "$TMP/ema-gone.h5: missing group /ema" "$BIN" eval --checkpoint "$TMP/ema-gone.h5" --weights raw
  resume_case 1 1 "attribute n_averaged of /ema is 3, but /train says 2 steps" ema-count
  resume_case 1 1 "attribute decay of /ema is 0.5, but /config says ema 0.9" ema-decay
}

# A signal that comes while start-up waits: the program must end with a message, not die silently or wait.
# Python blocks SIGTERM, sends it to itself and execs the program, which inherits it pending.
PENDING_TERM=(python3 -c 'import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); os.kill(os.getpid(), signal.SIGTERM)
os.execv(sys.argv[1], sys.argv[1:])')
signal_cases_one_rank() {
  check 1 75 "SIGTERM received during start-up" "${PENDING_TERM[@]}" "$BIN" "${S[@]}" --checkpoint-dir "$TMP/sig" # [5]
  [ ! -e "$TMP/sig/last.h5" ] || fail "[5] a checkpoint was written after a start-up signal"
  check 1 1 "SIGTERM received" "${PENDING_TERM[@]}" "$BIN" eval --checkpoint "$GOOD"                              # [5]
}

# ---- runs that must finish, or stop with a clean state ------------------------------------------------------
# [1] mid-epoch checkpoint (batch 5 of 8 at batch size 8, 40 images) resumed where an epoch has fewer
# batches: the old loop spun forever without checking signals
outcome_cases() {
  local np=$1 dir
  dir=$TMP/bigger-$np
  rm -rf "$dir" && cp -r "$TMP/mid" "$dir"
  check_ok "$np" "resume: epoch 1 was 40 images in (batch 5 at batch size 8): going on at batch 1 of 2" \
    "$BIN" "${S[@]}" --batch-size 32 --max-steps 6 --checkpoint-dir "$dir" --resume auto
  # [4] a learning rate that makes the parameters non-finite: stopped with exit 1, nothing non-finite written
  dir=$TMP/lr-$np
  rm -rf "$dir" && cp -r "$TMP/good" "$dir"
  check "$np" 1 "training diverged" \
    "$BIN" "${S[@]}" --lr 1e30 --max-steps 12 --eval-every 1 --checkpoint-dir "$dir" --resume auto
  for f in "$dir"/*.h5; do
    "$BIN" eval --checkpoint "$f" --json > /dev/null 2>&1 || fail "[4] $f was written non-finite"
  done
}
# check_ok NP TEXT CMD...: CMD must exit 0 within LIMIT seconds with TEXT on stdout
check_ok() {
  local np=$1 text=$2 code
  shift 2
  run_limited "$np" "$@"
  [ "$code" -eq 0 ] || fail "exit $code on $np rank(s): $* -- $(cat "$TMP/err")"
  grep -qF -- "$text" "$TMP/out" || fail "no '$text' on $np rank(s): $* -- $(cat "$TMP/out")"
  cases=$((cases + 1))
}
step_of() { h5dump -a /train/step "$1" | sed -n 's/^ *(0): //p'; }
outcome_cases_one_rank() {
  local dir=$TMP/shorter
  rm -rf "$dir" && cp -r "$TMP/mid" "$dir"
  check_ok 1 "it now has 32 images in 4 batches: starting epoch 2" \
    "$BIN" "${S[@]}" --limit-train 32 --max-steps 7 --checkpoint-dir "$dir" --resume auto                    # [1]
  [ "$(step_of "$dir/last.h5")" -eq 7 ] || fail "[1] resumed run did not reach step 7"
  rm -rf "$TMP/over" && cp -r "$TMP/good" "$TMP/over"
  check_ok 1 "test accuracy" "$BIN" "${S[@]}" --max-steps 1 --checkpoint-dir "$TMP/over" --overwrite        # [6]
  [ "$(step_of "$TMP/over/last.h5")" -eq 1 ] || fail "[6] --overwrite did not start afresh"
  [ ! -e "$TMP/over/best.h5" ] || fail "[6] --overwrite left the old run's best.h5 beside the new run"
}

for kind in flag folder data cifar checkpoint signal outcome; do
  start=$(date +%s)
  before=$cases
  declare -F "${kind}_cases" > /dev/null && "${kind}_cases" 1
  declare -F "${kind}_cases_one_rank" > /dev/null && "${kind}_cases_one_rank"
  pass "$kind: $((cases - before)) cases on 1 rank ($(( $(date +%s) - start )) s)"
done
one_rank=$cases
for kind in flag folder data cifar checkpoint outcome; do
  start=$(date +%s)
  before=$cases
  "${kind}_cases" 3
  declare -F "${kind}_cases_three_ranks" > /dev/null && "${kind}_cases_three_ranks"
  pass "$kind: $((cases - before)) cases on 3 ranks ($(( $(date +%s) - start )) s)"
done
pass "$one_rank cases on 1 rank, $((cases - one_rank)) on 3 ranks: right exit code, one line naming the culprit, no hang"
