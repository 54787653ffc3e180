# shellcheck shell=bash
# Helpers for the end-to-end tests: meson passes RESNET_MPI (the built program) in the environment.
set -euo pipefail
BIN=${RESNET_MPI:?RESNET_MPI must name the resnet_mpi binary}
FMNIST=${RESNET_FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# more ranks than cores, without binding each rank to one core
MPIRUN=(mpirun --oversubscribe --bind-to none)
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/resnet-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT


# mpi NP ARGS...: resnet_mpi on NP ranks
mpi() { local np=$1; shift; "${MPIRUN[@]}" -np "$np" "$BIN" "$@"; }

# Real Fashion-MNIST with its test set cut to the first $FM_TEST images (a copy in $TMP), so that the
# test at the end of every short run costs little: the train files are the package's own.
FM_DIR=$TMP/fm
mkdir -p "$FM_DIR"
ln -s "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" "$FM_DIR/"
be32() { printf '%b' "$(printf '\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }
# first_bytes FILE.gz SKIP COUNT: COUNT bytes after the first SKIP (head ends the pipe early: no pipefail)
first_bytes() { (set +o pipefail; gzip -dc "$1" | tail -c +$(($2 + 1)) | head -c "$3"); }
FM_TEST=200
{ be32 2051; be32 "$FM_TEST"; be32 28; be32 28; first_bytes "$FMNIST/t10k-images-idx3-ubyte.gz" 16 $((FM_TEST * 784)); } > "$FM_DIR/t10k-images-idx3-ubyte"
{ be32 2049; be32 "$FM_TEST"; first_bytes "$FMNIST/t10k-labels-idx1-ubyte.gz" 8 "$FM_TEST"; } > "$FM_DIR/t10k-labels-idx1-ubyte"
[ "$(stat -c %s "$FM_DIR/t10k-images-idx3-ubyte")" -eq $((16 + FM_TEST * 784)) ] || fail "could not cut the test set"

# A short Fashion-MNIST run's flags: small, real data, quick. FM_DEFAULT keeps the default recipe (tuned:
# the moving average and reference BN statistics, which make each validation about three times as long);
# FM_SMALL, for the tests of everything else, the seed's (one evaluation a validation).
# shellcheck disable=SC2034  # used by the scripts that source this file
FM_DEFAULT=(--dataset fashion-mnist --data "$FM_DIR" --val-size 200 --progress never)
# shellcheck disable=SC2034
FM_SMALL=("${FM_DEFAULT[@]}" --recipe seed)
# The same on ResNet-8 (--depth 8: a third of ResNet-20's compute), for the tests of mechanics that do
# not depend on the depth (resume, crash safety, ranks, stalls, Slurm); the parity, export and learning
# tests keep the seed's ResNet-20.
# shellcheck disable=SC2034
FM_QUICK=("${FM_SMALL[@]}" --depth 8)

# relative difference of two numbers, compared against a bound: reldiff_le A B BOUND
reldiff_le() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m == 0) m = 1; exit !(d / m <= t) }'; }
