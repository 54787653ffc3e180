#!/usr/bin/env bash
# The rows of the README's learning tables (issues 15 and 18) from finished runs: for each run folder,
# the final model (last.h5) and best.h5 scored on the test set, clean and under the seed's protocol, with
# batch and reference BN statistics, the trained weights and (when the run kept one, --ema) the moving
# average, without and with flip TTA; then the validation history's best, the epochs to 80% and 85% and
# where the seed's early stop would have fired (scripts/early-stop-replay.py), and the run's wall time.
#   scripts/learning-table.sh [--data DIR] [--threads N] RUN_DIR...
# Each number comes from one `resnet_mpi eval` command, printed before it, so a row can be reproduced alone.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${RESNET_DATA:-data/cifar-10-batches-bin} threads=$(nproc)
bin=${RESNET_MPI:-build/resnet_mpi}
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -*) echo "learning-table.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: learning-table.sh [--data DIR] [--threads N] RUN_DIR..." >&2; exit 2; }
[ -x "$bin" ] || { echo "learning-table.sh: $bin not built" >&2; exit 1; }
score() {   # checkpoint weights bn tta -> "clean seed" accuracies
  local cmd=("$bin" eval --checkpoint "$1" --data "$data" --threads "$threads" --weights "$2" --bn-eval "$3"
             --tta "$4" --json)
  echo "  \$ ${cmd[*]}" >&2
  "${cmd[@]}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.4f %.4f" % (r["accuracy"], r["other_protocol"]["accuracy"]))'
}
for dir in "$@"; do
  [ -f "$dir/last.h5" ] || { echo "learning-table.sh: $dir has no last.h5" >&2; exit 1; }
  echo "## $dir"
  weights=(raw)
  h5ls "$dir/last.h5" | grep -q '^ema ' && weights+=(ema)
  echo "| checkpoint | weights | BN statistics | TTA | clean test | seed-protocol test |"
  echo "|---|---|---|---|---|---|"
  for ck in last best; do
    [ -f "$dir/$ck.h5" ] || continue
    for w in "${weights[@]}"; do
      for bn in batch reference; do
        for tta in none flip; do
          read -r clean seed < <(score "$dir/$ck.h5" "$w" "$bn" "$tta")
          echo "| $ck.h5 | $w | $bn | $tta | $clean | $seed |"
        done
      done
    done
  done
  [ -f "$dir/metrics.jsonl" ] && python3 scripts/early-stop-replay.py "$dir/metrics.jsonl"
  [ -f "$dir/report.json" ] && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["time"]; print("training time over all its processes (resumes): %.0f s (%.2f h), the last process %.0f s; stopped: %s" % (t["training_total_s"], t["training_total_s"] / 3600, t["wall_s"], r["outcome"]["stop_reason"]))' "$dir/report.json" || true
done
