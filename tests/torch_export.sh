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
for case in seed:batch paper:running seed:reference; do
  arch=${case%:*} mode=${case#*:}
  "$BIN" "${FM_SMALL[@]}" --arch "$arch" --bn-eval "$mode" --bn-sample 256 --limit-train 512 --batch-size 64 --max-steps 4 \
    --eval-every 2 --threads 1 --quiet --checkpoint-dir "$TMP/$case" >/dev/null || fail "$case: training"
  /usr/bin/python3 "$here/../scripts/torch_export.py" "$TMP/$case/last.h5" "$TMP/$case.pt" || fail "$case: export"
  "$EXPORT_LOGITS" "$TMP/$case/last.h5" "$TMP/$case.bin" "$mode" || fail "$case: C logits"
  /usr/bin/python3 "$here/torch_export_check.py" "$TMP/$case.pt" "$TMP/$case.bin" || fail "$case: logits differ"
  pass "$arch, --bn-eval $mode: exported checkpoint reproduces the C logits in PyTorch"
done
