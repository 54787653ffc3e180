#!/usr/bin/env bash
# The test suite, from a fresh Debian machine: installs the packages it needs when they are missing,
# builds with meson, runs `meson test` (two tests at a time), then runs the unit suites again under ASan + UBSan in a portable
# build (-Dnative=false) and fuzzes each file reader for 10 s (scripts/fuzz.sh, clang + libFuzzer).
#   scripts/test.sh            everything
#   scripts/test.sh --quick    the release build's tests only (no sanitizer build, no fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(meson ninja-build pkg-config gcc libopenmpi-dev openmpi-bin libblis-dev libhdf5-dev hdf5-tools
          check zlib1g-dev xz-utils dataset-fashion-mnist slurm-wlm munge shellcheck
          clang libclang-rt-dev libomp-dev
          python3-torch python3-h5py python3-matplotlib
          iproute2 strace)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# the PyTorch export, the model summary and the plot tests run Debian's Python with these packages
/usr/bin/python3 -c "import torch, h5py, matplotlib" ||
  { echo "test.sh: error: /usr/bin/python3 cannot import torch, h5py and matplotlib" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

[ -f build/build.ninja ] || meson setup build --buildtype=release
meson compile -C build
meson test -C build --print-errorlogs --num-processes 2

if [ "${1:-}" != "--quick" ]; then
  # Sanitizers on the unit suites: memory errors and undefined behaviour in the kernels, model, readers
  # and checkpoint code. Open MPI's own allocations are not ours to fix, hence no leak checking. The
  # sanitizer build is also the portable one (-Dnative=false: baseline x86-64 but for the direct kernels'
  # per-ISA objects), whose layer tests run every kernel path this CPU has: no extra build.
  [ -f build-asan/build.ninja ] || meson setup build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false -Dnative=false
  meson configure build-asan -Dnative=false   # a folder set up before it was portable
  # only what the unit suites run is built (not the program and the e2e tools): half the build time
  mapfile -t unit_exes < <(meson introspect --tests build-asan | /usr/bin/python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if any(s.split(":")[-1] == "unit" for s in t["suite"]) and t["cmd"][0].startswith(os.path.abspath("build-asan")):
        print(os.path.relpath(t["cmd"][0], os.path.abspath("build-asan")))')
  [ "${#unit_exes[@]}" -gt 0 ] || { echo "test.sh: error: no unit suites found in build-asan" >&2; exit 1; }
  ninja -C build-asan "${unit_exes[@]}"
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --suite unit --no-rebuild --print-errorlogs --num-processes 2 --timeout-multiplier 4
  # the readers (CIFAR-10, IDX/gzip, checkpoints) under libFuzzer, 10 s each from the committed seeds
  scripts/fuzz.sh all 10
fi
