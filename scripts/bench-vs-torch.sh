#!/usr/bin/env bash
# resnet_mpi against the seed's PyTorch model on the same cores: `resnet_mpi bench` and
# scripts/torch_bench.py run alternately, several rounds, same batch and threads; prints the median of
# each, the ratios, and peak memory. Needs Debian's python3-torch (run with /usr/bin/python3).
#   scripts/bench-vs-torch.sh [--arch seed|paper] [--batch-size 128] [--threads 2] [--rounds 3] [--steps 20]
#                             [--ranks 1]
# --ranks N runs resnet_mpi as N MPI ranks x threads/N threads each (PyTorch keeps one process with all
# threads), so both use the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=seed batch=128 threads=$(nproc) rounds=3 steps=20 ranks=1
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    *) echo "bench-vs-torch.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bin=${RESNET_MPI:-build/resnet_mpi}
[ -x "$bin" ] || { echo "bench-vs-torch.sh: $bin not built (meson setup build && meson compile -C build)" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "bench-vs-torch.sh: needs python3-torch" >&2; exit 1; }
ours=("$bin")
rank_threads=$threads
if [ "$ranks" -gt 1 ]; then
  [ $((threads % ranks)) -eq 0 ] || { echo "bench-vs-torch.sh: --threads $threads is not a multiple of --ranks $ranks" >&2; exit 2; }
  rank_threads=$((threads / ranks))
  ours=(mpirun --oversubscribe --bind-to core -np "$ranks" "$bin")
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  "${ours[@]}" bench --arch "$arch" --batch-size "$batch" --threads "$rank_threads" --steps "$steps" --warmup 3 > "$out/c$r"
  /usr/bin/python3 scripts/torch_bench.py --arch "$arch" --batch-size "$batch" --threads "$threads" \
    --steps "$steps" --warmup 3 > "$out/t$r"
  echo "round $r: resnet_mpi $(grep -o '^train: [0-9.]*' "$out/c$r" | cut -d' ' -f2) img/s train," \
       "$(grep -o '^eval: [0-9.]*' "$out/c$r" | cut -d' ' -f2) eval; torch" \
       "$(grep -o '^train: [0-9.]*' "$out/t$r" | cut -d' ' -f2) train, $(grep -o '^eval: [0-9.]*' "$out/t$r" | cut -d' ' -f2) eval"
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { for r in $(seq 1 "$rounds"); do sed -n "s/$2/\1/p" "$out/$1$r"; done | median; }
ct=$(field c '^train: \([0-9.]*\) images.*')
ce=$(field c '^eval: \([0-9.]*\) images.*')
cm=$(field c '^peak memory: \([0-9]*\) MiB.*')
tt=$(field t '^train: \([0-9.]*\) images.*')
te=$(field t '^eval: \([0-9.]*\) images.*')
tm=$(field t '^peak memory: \([0-9]*\) MiB.*')
cme=$(field c '^peak memory: .*, \([0-9]*\) MiB with the.*')
tme=$(field t '^peak memory: .*, \([0-9]*\) MiB with the.*')
cg=$(field c '^train: .* \([0-9.]*\) GFLOP.s.*')
ceg=$(field c '^eval: .* \([0-9.]*\) GFLOP.s.*')
echo
echo "$arch ResNet-20, batch $batch, $threads thread(s) (resnet_mpi: $ranks rank(s) x $rank_threads), median of $rounds rounds ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
printf '%-22s %12s %12s %8s\n' "" "resnet_mpi" "PyTorch" "ratio"
printf '%-22s %12.1f %12.1f %7.2fx\n' "train images/s" "$ct" "$tt" "$(awk -v a="$ct" -v b="$tt" 'BEGIN { print a / b }')"
printf '%-22s %12.1f %12.1f %7.2fx\n' "eval images/s" "$ce" "$te" "$(awk -v a="$ce" -v b="$te" 'BEGIN { print a / b }')"
printf '%-22s %12s %12s %7.2fx\n' "peak memory (train)" "$cm MiB" "$tm MiB" "$(awk -v a="$cm" -v b="$tm" 'BEGIN { print a / b }')"
printf '%-22s %12s %12s %7.2fx\n' "  with 5000-image eval" "$cme MiB" "$tme MiB" "$(awk -v a="$cme" -v b="$tme" 'BEGIN { print a / b }')"
echo "resnet_mpi GFLOP/s: train $cg, eval $ceg (PyTorch's at the same FLOP count: train $(awk -v g="$cg" -v a="$tt" -v b="$ct" 'BEGIN { printf "%.1f", g * a / b }'), eval $(awk -v g="$ceg" -v a="$te" -v b="$ce" 'BEGIN { printf "%.1f", g * a / b }'))"
