#!/usr/bin/env bash
# resnet_mpi against the seed's PyTorch model on the same cores: `resnet_mpi bench` and
# scripts/torch_bench.py run alternately, several rounds, same batch and threads; prints the median of
# each, the ratios, and peak memory. Needs Debian's python3-torch (run with /usr/bin/python3).
#   scripts/bench-vs-torch.sh [--arch seed|paper] [--batch-size 128] [--threads 2] [--rounds 3] [--steps 20]
#                             [--ranks 1] [--torch-isa avx2] [--sweep 8,16,32,64,128]
# --ranks N runs resnet_mpi as N MPI ranks x threads/N threads each (PyTorch keeps one process with all
# threads), so both use the same cores.
# --torch-isa avx2 holds PyTorch to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), the peer of
# an AVX2 node; resnet_mpi picks its kernels itself (RESNET_ISA=avx2 in the environment holds it too).
# --sweep B1,B2,...: afterwards, resnet_mpi's training images/s per core at each per-rank batch (1 rank x
# 1 thread, median of --rounds), and each as a share of the largest batch's.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=seed batch=128 threads=$(nproc) rounds=3 steps=20 ranks=1 torch_isa="" sweep=""
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --torch-isa) torch_isa=$2; shift 2 ;;
    --sweep) sweep=$2; shift 2 ;;
    *) echo "bench-vs-torch.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bin=${RESNET_MPI:-build/resnet_mpi}
[ -x "$bin" ] || { echo "bench-vs-torch.sh: $bin not built (meson setup build && meson compile -C build)" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "bench-vs-torch.sh: needs python3-torch" >&2; exit 1; }
torch_env=()
case $torch_isa in
  "") ;;
  avx2) torch_env=(env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) ;;
  avx512) torch_env=(env ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512) ;;
  *) echo "bench-vs-torch.sh: --torch-isa $torch_isa: avx2 or avx512" >&2; exit 2 ;;
esac
[[ $sweep =~ ^[0-9]+(,[0-9]+)*$ || -z $sweep ]] || { echo "bench-vs-torch.sh: --sweep $sweep: batches like 8,16,32" >&2; exit 2; }
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
  "${torch_env[@]}" /usr/bin/python3 scripts/torch_bench.py --arch "$arch" --batch-size "$batch" --threads "$threads" \
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
echo "resnet_mpi: $(grep -m1 -o 'direct convolutions [A-Za-z0-9 ()+,]*' "$out/c1"); $(grep -m1 -o '^peak: [0-9.]* GFLOP/s' "$out/c1") measured FMA peak; PyTorch: ${torch_isa:-its own ISA choice}"
printf '%-22s %12s %12s %8s\n' "" "resnet_mpi" "PyTorch" "ratio"
printf '%-22s %12.1f %12.1f %7.2fx\n' "train images/s" "$ct" "$tt" "$(awk -v a="$ct" -v b="$tt" 'BEGIN { print a / b }')"
printf '%-22s %12.1f %12.1f %7.2fx\n' "eval images/s" "$ce" "$te" "$(awk -v a="$ce" -v b="$te" 'BEGIN { print a / b }')"
printf '%-22s %12s %12s %7.2fx\n' "peak memory (train)" "$cm MiB" "$tm MiB" "$(awk -v a="$cm" -v b="$tm" 'BEGIN { print a / b }')"
printf '%-22s %12s %12s %7.2fx\n' "  with 5000-image eval" "$cme MiB" "$tme MiB" "$(awk -v a="$cme" -v b="$tme" 'BEGIN { print a / b }')"
echo "resnet_mpi GFLOP/s: train $cg, eval $ceg (PyTorch's at the same FLOP count: train $(awk -v g="$cg" -v a="$tt" -v b="$ct" 'BEGIN { printf "%.1f", g * a / b }'), eval $(awk -v g="$ceg" -v a="$te" -v b="$ce" 'BEGIN { printf "%.1f", g * a / b }'))"

if [ -n "$sweep" ]; then
  echo
  echo "per-rank batch sweep: resnet_mpi bench, 1 rank x 1 thread, median of $rounds rounds"
  IFS=, read -r -a batches <<< "$sweep"
  for b in "${batches[@]}"; do
    for r in $(seq 1 "$rounds"); do
      "$bin" bench --arch "$arch" --batch-size "$b" --threads 1 --steps "$steps" --warmup 3 --eval-images 0 |
        sed -n 's/^train: \([0-9.]*\) images.*/\1/p'
    done | median > "$out/sweep$b"
  done
  largest=$(cat "$out/sweep${batches[-1]}")
  printf '%-16s %14s %18s\n' "batch per rank" "images/s" "of batch ${batches[-1]}"
  for b in "${batches[@]}"; do
    printf '%-16s %14.1f %17.0f%%\n' "$b" "$(cat "$out/sweep$b")" "$(awk -v a="$(cat "$out/sweep$b")" -v l="$largest" 'BEGIN { print 100 * a / l }')"
  done
fi
