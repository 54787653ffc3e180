# shellcheck shell=bash
# Helpers for the end-to-end tests: meson passes RESNET_MPI (the built program) in the environment.
set -euo pipefail
BIN=${RESNET_MPI:?RESNET_MPI must name the resnet_mpi binary}
FMNIST=${RESNET_FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# more ranks than cores, without binding each rank to one core
MPIRUN=(mpirun --oversubscribe --bind-to none)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/resnet-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# mpi NP ARGS...: resnet_mpi on NP ranks
mpi() { local np=$1; shift; "${MPIRUN[@]}" -np "$np" "$BIN" "$@"; }

# A short Fashion-MNIST run's flags: small, real data, quick.
# shellcheck disable=SC2034  # used by the scripts that source this file
FM_SMALL=(--dataset fashion-mnist --data "$FMNIST" --val-size 1000 --progress never)

# relative difference of two numbers, compared against a bound: reldiff_le A B BOUND
reldiff_le() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m == 0) m = 1; exit !(d / m <= t) }'; }
