#!/usr/bin/env bash
# scripts/torch_export.py: the exported state_dict, loaded with strict=True into the seed's PyTorch
# model, gives the C model's logits on a fixed batch (relative error 1e-5). Needs Debian's
# python3-torch and python3-h5py for /usr/bin/python3 (scripts/test.sh installs them): without them
# the test fails rather than skips.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3 -c "import torch, h5py" 2>/dev/null ||
  fail "python3-torch / python3-h5py are not installed for /usr/bin/python3 (scripts/test.sh installs them)"
EXPORT_LOGITS=${EXPORT_LOGITS:?meson passes the export_logits helper}
for arch in seed paper; do
  mode="batch"
  [ "$arch" = paper ] && mode=running
  "$BIN" "${FM_SMALL[@]}" --arch "$arch" --bn-eval "$mode" --limit-train 512 --batch-size 64 --max-steps 4 \
    --eval-every 2 --threads 1 --quiet --checkpoint-dir "$TMP/$arch" >/dev/null || fail "$arch: training"
  /usr/bin/python3 "$here/../scripts/torch_export.py" "$TMP/$arch/last.h5" "$TMP/$arch.pt" || fail "$arch: export"
  "$EXPORT_LOGITS" "$TMP/$arch/last.h5" "$TMP/$arch.bin" "$mode" || fail "$arch: C logits"
  /usr/bin/python3 "$here/torch_export_check.py" "$TMP/$arch.pt" "$TMP/$arch.bin" || fail "$arch: logits differ"
  pass "$arch: exported checkpoint reproduces the C logits in PyTorch"
done
