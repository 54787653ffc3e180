#!/usr/bin/env bash
# scripts/torch_export.py: the exported state_dict, loaded with strict=True into the seed's PyTorch
# model, gives the C model's logits on a fixed batch (relative error 1e-5), and its reference_stats are
# the checkpoint's bitwise; with --weights ema (the default recipe's model: --ema with --bn-eval
# reference) the average's, with its own statistics (/ema/reference), and a file without them is
# exported without reference_stats and a one-line note, as are raw weights without /reference. Needs
# Debian's python3-torch and python3-h5py for /usr/bin/python3 (scripts/test.sh installs them):
# without them the test fails rather than skips.
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
  check=("$TMP/$case.pt" "$TMP/$case.bin")
  [ "$mode" != reference ] || check+=("$TMP/$case/last.h5")
  /usr/bin/python3 "$here/torch_export_check.py" "${check[@]}" || fail "$case: logits or reference_stats differ"
  pass "$arch, --bn-eval $mode: exported checkpoint reproduces the C logits in PyTorch"
done

export=(/usr/bin/python3 "$here/../scripts/torch_export.py")
"$BIN" "${FM_SMALL[@]}" --ema 0.9 --bn-eval reference --bn-sample 256 --limit-train 512 --batch-size 64 \
  --max-steps 4 --eval-every 2 --threads 1 --quiet --checkpoint-dir "$TMP/ema" >/dev/null || fail "ema: training"
"${export[@]}" --weights ema "$TMP/ema/last.h5" "$TMP/ema.pt" || fail "ema: export"
"$EXPORT_LOGITS" "$TMP/ema/last.h5" "$TMP/ema.bin" reference ema || fail "ema: C logits"
/usr/bin/python3 "$here/torch_export_check.py" "$TMP/ema.pt" "$TMP/ema.bin" "$TMP/ema/last.h5" ||
  fail "ema: logits or reference_stats differ"
pass "--weights ema: reference_stats are /ema/reference; PyTorch reproduces the C logits of the average"

# an earlier version's file: /ema and /reference, no /ema/reference
/usr/bin/python3 - "$TMP/ema/last.h5" "$TMP/old.h5" <<'EOF' || fail "could not remove /ema/reference"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["ema/reference"]
EOF
note=$("${export[@]}" --weights ema "$TMP/old.h5" "$TMP/old.pt" 2>&1 >/dev/null) || fail "export of a file without /ema/reference"
[ "$(wc -l <<<"$note")" -eq 1 ] && grep -q "no /ema/reference" <<<"$note" || fail "no one-line note: $note"
/usr/bin/python3 -c "import sys, torch; s = torch.load(sys.argv[1]); assert 'reference_stats' not in s and s['weights'] == 'ema'" \
  "$TMP/old.pt" || fail "reference_stats exported for the average of a file without /ema/reference"
pass "--weights ema of a file without /ema/reference: no reference_stats, and $note"


# a --validate-raw off run's file (the tuned default): /ema/reference, no /reference
/usr/bin/python3 - "$TMP/ema/last.h5" "$TMP/noraw.h5" <<'EOF' || fail "could not remove /reference"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["reference"]
EOF
note=$("${export[@]}" "$TMP/noraw.h5" "$TMP/noraw.pt" 2>&1 >/dev/null) || fail "export of a file without /reference"
[ "$(wc -l <<<"$note")" -eq 1 ] && grep -q "no /reference" <<<"$note" || fail "no one-line note: $note"
/usr/bin/python3 -c "import sys, torch; s = torch.load(sys.argv[1]); assert 'reference_stats' not in s and s['weights'] == 'raw'" \
  "$TMP/noraw.pt" || fail "reference_stats exported for raw weights of a file without /reference"
pass "raw weights of a file without /reference: no reference_stats, and $note"
