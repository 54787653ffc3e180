#!/usr/bin/env bash
# Puts a verified copy of the CIFAR-10 binary release where resnet_mpi looks for it.
#   scripts/get-cifar10.sh                 download into data/cifar-10-batches-bin (under the repo root)
#   scripts/get-cifar10.sh --from DIR      take data_batch_1..5.bin and test_batch.bin from DIR, plain or
#                                          xz-compressed (.bin.xz), instead of downloading
#   scripts/get-cifar10.sh --dest DIR      put the data in DIR instead
# A destination that already holds the six files with the official MD5s is left alone. Everything is
# unpacked and verified in a temporary folder next to the destination and only then renamed into place,
# so a failure or an interrupt never leaves a partial data set where the program would read it.
set -euo pipefail

prog=get-cifar10.sh
url=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
tar_md5=c32a1d4ab5d03f1284b67883e8d87530
files=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)
# The official checksums, kept here because machines that run this have no other copy of them.
md5sums="5dd7e06a14cb22eb9f671a540d1b7c25  data_batch_1.bin
5ea93a67294ea407fff1d09f752e9692  data_batch_2.bin
942cd6a4bcdd0dd3c604fbe906cb4421  data_batch_3.bin
ae636b3ba5c66a11e91e8cb52e771fcb  data_batch_4.bin
53f37980c15c3d472c316c40844f3f0d  data_batch_5.bin
803d5f7f4d78ea53de84dbe85f74fb6d  test_batch.bin"
class_names="airplane automobile bird cat deer dog frog horse ship truck"

die() {
  echo "$prog: $*" >&2
  exit 1
}

usage() {
  echo "usage: $prog [--dest DIR] [--from DIR]" >&2
  exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/data/cifar-10-batches-bin"
from=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) [ $# -ge 2 ] && [ -n "$2" ] || usage; dest=$2; shift 2 ;;
    --from) [ $# -ge 2 ] && [ -n "$2" ] || usage; from=$2; shift 2 ;;
    -h|--help) sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "$prog: unknown argument: $1" >&2; usage ;;
  esac
done
dest=${dest%/}
[ -n "$dest" ] || die "--dest must not be the root folder"

# md5_of FILE: the digest alone
md5_of() {
  local sum
  sum=$(md5sum < "$1") || return 1
  echo "${sum%% *}"
}

# verify DIR: 0 when the six files are there with the official MD5s; else 1 with the reason in $why
why=""
verify() {
  local dir=$1 want name got
  while read -r want name; do
    if [ ! -f "$dir/$name" ]; then
      why="$dir/$name: missing"
      return 1
    fi
    got=$(md5_of "$dir/$name") || { why="$dir/$name: cannot read"; return 1; }
    if [ "$got" != "$want" ]; then
      why="$dir/$name: MD5 $got, expected $want"
      return 1
    fi
  done <<< "$md5sums"
}

if [ -d "$dest" ] && verify "$dest"; then
  echo "CIFAR-10 already in $dest (verified)"
  exit 0
fi
existing_problem=""
if [ -e "$dest" ]; then
  [ -d "$dest" ] || die "$dest: exists and is not a folder"
  existing_problem=$why
fi

command -v md5sum > /dev/null || die "md5sum not found (coreutils)"
parent=$(dirname "$dest")
mkdir -p -- "$parent" 2> /dev/null || die "$parent: cannot create the folder"
# The temporary folder lives next to the destination so that the final mv is a rename on one file system.
tmp=$(mktemp -d "$parent/.cifar-10-tmp.XXXXXX" 2> /dev/null) || die "$parent: cannot create a temporary folder"
pids=()
# Jobs still unpacking are stopped first: they would otherwise keep writing into the removed folder.
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'cleanup; trap - INT; kill -INT $$' INT
trap 'cleanup; exit 143' TERM
stage="$tmp/cifar-10-batches-bin"
mkdir "$stage"

if [ -n "$from" ]; then
  [ -d "$from" ] || die "$from: no such folder"
  for name in "${files[@]}"; do
    [ -f "$from/$name" ] || [ -f "$from/$name.xz" ] || die "$from: neither $name nor $name.xz is there"
  done
  if ls "$from"/*.bin.xz > /dev/null 2>&1; then
    command -v xz > /dev/null || die "xz not found (apt-get install xz-utils) to unpack $from/*.bin.xz"
  fi
  # The six decompressions run side by side (xz decompresses one stream on one core); each job leaves
  # its own error file so that the first failure can be reported as one line.
  for name in "${files[@]}"; do
    if [ -f "$from/$name" ]; then
      cp -- "$from/$name" "$stage/$name" 2> "$tmp/$name.err" &
    else
      xz -dc -- "$from/$name.xz" > "$stage/$name" 2> "$tmp/$name.err" &
    fi
    pids+=("$!")
  done
  for i in "${!files[@]}"; do
    if ! wait "${pids[$i]}"; then
      name=${files[$i]}
      detail=$(tail -n 1 "$tmp/$name.err" 2> /dev/null || true)
      die "$from: cannot unpack $name${detail:+: $detail}"
    fi
  done
  if [ -f "$from/batches.meta.txt" ]; then
    cp -- "$from/batches.meta.txt" "$stage/" 2> /dev/null || die "$from/batches.meta.txt: cannot copy"
  fi
  # copies keep a read-only source's mode; the data set should be ours to replace or delete
  chmod -R u+w -- "$stage"
else
  archive="$tmp/cifar-10-binary.tar.gz"
  echo "downloading $url (163 MB)"
  if command -v curl > /dev/null; then
    curl -fsSL --retry 3 -o "$archive" "$url" 2> "$tmp/download.err" ||
      die "download of $url failed: $(tail -n 1 "$tmp/download.err")"
  elif command -v wget > /dev/null; then
    wget -q --tries=3 -O "$archive" "$url" 2> "$tmp/download.err" ||
      die "download of $url failed (wget exit status $?)"
  else
    die "neither curl nor wget is installed: install one, or pass --from DIR"
  fi
  got=$(md5_of "$archive") || die "$archive: cannot read"
  [ "$got" = "$tar_md5" ] || die "$url: MD5 $got, expected $tar_md5 (incomplete or altered download)"
  tar -xzf "$archive" -C "$tmp" 2> "$tmp/tar.err" || die "$archive: cannot unpack: $(tail -n 1 "$tmp/tar.err")"
  rm -f -- "$archive"
fi

verify "$stage" || die "${from:-$url}: ${why#"$stage"/}"
if [ ! -f "$stage/batches.meta.txt" ]; then
  # shellcheck disable=SC2086  # word splitting of the names is the point
  printf '%s\n' $class_names > "$stage/batches.meta.txt"
fi

# Into place: the old destination (if any: it failed verification above) is renamed away first and
# removed with the temporary folder, so the destination is at every moment either whole or absent.
if [ -e "$dest" ]; then
  echo "$prog: replacing $dest ($existing_problem)" >&2
  mv -- "$dest" "$tmp/old" || die "$dest: cannot move the old copy away"
fi
mv -- "$stage" "$dest" || die "$dest: cannot move the new copy into place"
echo "CIFAR-10 ready in $dest"
