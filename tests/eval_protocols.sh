#!/usr/bin/env bash
# eval's protocols against PyTorch: --eval-protocol clean|seed and --tta none|flip on the test set give
# the confusion matrices of the seed's PyTorch model with the same weights (eval_protocols_check.py),
# the same on 1 and 2 ranks; each run reports the other protocol's accuracy too.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3 -c "import torch, h5py" 2>/dev/null ||
  fail "python3-torch / python3-h5py are not installed for /usr/bin/python3 (scripts/test.sh installs them)"
# ResNet-8 trained a little, so that the classes are told apart and protocols give different numbers
"$BIN" "${FM_QUICK[@]}" --limit-train 2048 --batch-size 64 --max-steps 24 --eval-every 1000 --threads 2 --quiet \
  --checkpoint-dir "$TMP/ck" > /dev/null || fail "training"
/usr/bin/python3 "$here/../scripts/torch_export.py" "$TMP/ck/last.h5" "$TMP/model.pt" > /dev/null || fail "export"
echo "{" > "$TMP/results.json"
sep=""
for protocol in clean seed; do
  for tta in none flip; do
    one=$("$BIN" eval --checkpoint "$TMP/ck/last.h5" --threads 2 --eval-protocol "$protocol" --tta "$tta" --json) ||
      fail "eval $protocol $tta"
    two=$(mpi 2 eval --checkpoint "$TMP/ck/last.h5" --threads 1 --eval-protocol "$protocol" --tta "$tta" --json) ||
      fail "eval $protocol $tta on 2 ranks"
    [ "$one" = "$two" ] || fail "$protocol $tta: 1 and 2 ranks differ: $one / $two"
    grep -q "\"protocol\":\"$protocol\",\"tta\":\"$tta\",\"other_protocol\":{\"protocol\":\"" <<<"$one" ||
      fail "$protocol $tta: no protocol fields: $one"
    printf '%s"%s %s": %s\n' "$sep" "$protocol" "$tta" "$one" >> "$TMP/results.json"
    sep=","
  done
done
echo "}" >> "$TMP/results.json"
/usr/bin/python3 "$here/eval_protocols_check.py" "$TMP/model.pt" "$FM_DIR" "$FM_TEST" "$TMP/results.json" ||
  fail "the C protocols disagree with PyTorch's"
pass "clean / seed protocol x no TTA / flip TTA: the confusion matrices of PyTorch's seed model, identical on 1 and 2 ranks"
