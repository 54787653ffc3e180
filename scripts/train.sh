#!/usr/bin/env bash
# The main job on one machine: installs what is missing, builds, fetches CIFAR-10 and trains the default
# (tuned) recipe on every core (one MPI rank per core). Extra arguments go to resnet_mpi, e.g.
#   scripts/train.sh --epochs 5      scripts/train.sh --recipe seed
# Where no CIFAR-10 can be had (no network, no local copy), it trains on Fashion-MNIST from Debian's
# dataset-fashion-mnist package instead, so the command always does a real run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(meson ninja-build pkg-config gcc libopenmpi-dev openmpi-bin libblis-dev libhdf5-dev hdf5-tools
          zlib1g-dev check xz-utils curl dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
meson compile -C build >/dev/null

data_args=()
from=()
[ -d ../shared/data/cifar-10-batches-bin ] && from=(--from ../shared/data/cifar-10-batches-bin)
if ! scripts/get-cifar10.sh "${from[@]}"; then
  echo "train.sh: CIFAR-10 could not be fetched; training on Fashion-MNIST (/usr/share/datasets/fashion-mnist) instead" >&2
  data_args=(--dataset fashion-mnist --data /usr/share/datasets/fashion-mnist)
fi

mpi_args=()
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cores=$(nproc)
exec mpirun "${mpi_args[@]}" -np "$cores" build/resnet_mpi train "${data_args[@]}" "$@"
