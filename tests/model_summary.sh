#!/usr/bin/env bash
# `resnet_mpi summary` against PyTorch: for the seed and paper models at depth 20 and other depths and
# inputs, every row (layer type, output shape, parameters) equals what torchsummary's method gives for
# the reference model of scripts/seed_model.py, and the totals are torchsummary's (repeated) count and
# the model's unique parameter count. Bad flags are one-line usage errors.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3 -c "import torch" 2>/dev/null || fail "python3-torch is not installed for /usr/bin/python3 (scripts/test.sh installs it)"

# c_rows ARGS...: the summary's rows as "Type [-1, ...] PARAMS", then "total LISTED UNIQUE"
c_rows() {
  "$BIN" summary "$@" | awk '
    /^=+$/ { table = !table; next }
    table { type = $1; sub(/-[0-9]+$/, "", type); match($0, /\[[^]]*\]/); shape = substr($0, RSTART, RLENGTH)
            rest = substr($0, RSTART + RLENGTH); split(rest, f, " "); p = f[1]; gsub(",", "", p); print type, shape, p }
    /^Total params:/ { t = $3; gsub(",", "", t) }
    /^Unique params:/ { u = $3; gsub(",", "", u) }
    END { print "total", t, u }'
}

specs=(seed:20:3:32:10 paper:20:3:32:10 seed:32:3:32:10 paper:44:3:32:10 seed:20:1:28:10 paper:56:1:28:7)
reference=$(/usr/bin/python3 "$here/torchsummary_rows.py" "${specs[@]}") || fail "the PyTorch reference failed"
for spec in "${specs[@]}"; do
  IFS=: read -r arch depth channels size classes <<<"$spec"
  c=$(c_rows --arch "$arch" --depth "$depth" --in-channels "$channels" --image-size "$size" --classes "$classes") ||
    fail "$spec: summary exited $?"
  py=$(awk -v s="== $spec" '$0 == s { on = 1; next } /^== / { on = 0 } on' <<<"$reference")
  [ -n "$py" ] || fail "$spec: no reference rows"
  [ "$c" = "$py" ] || fail "$spec: rows differ from PyTorch's:
$(diff <(echo "$c") <(echo "$py") | head -20)"
  pass "$spec: $(echo "$c" | wc -l) rows and totals ($(echo "$c" | tail -n 1)) equal PyTorch's"
done

# the seed notebook's printout for ResNet-20
out=$("$BIN" summary) || fail "summary exited $?"
grep -qx "Total params: 272,490" <<<"$out" || fail "seed total is not the notebook's 272,490"
grep -q "^Unique params: 271,818 " <<<"$out" || fail "no unique count 271,818"
grep -q "add 672 parameters" <<<"$out" || fail "the difference is not explained"
pass "seed ResNet-20: 272,490 as torchsummary, 271,818 unique, difference explained"
fm=$("$BIN" summary --dataset fashion-mnist) || fail "summary --dataset fashion-mnist exited $?"
[ "${fm%%$'\n'*}" = "seed ResNet-20, input 1x28x28, 10 classes" ] || fail "--dataset fashion-mnist: '${fm%%$'\n'*}'"

for bad in "--depth 21" "--arch resnet" "--image-size 4" "--classes x" "--in-channels" "--bogus 1" "extra"; do
  # shellcheck disable=SC2086  # each case is several words on purpose
  err=$("$BIN" summary $bad 2>&1 >/dev/null) && fail "summary $bad succeeded"
  code=$?
  [ "$code" -eq 2 ] || fail "summary $bad: exit $code, expected 2"
  [ "$(echo "$err" | wc -l)" -eq 1 ] || fail "summary $bad: not one line: $err"
  pass "summary $bad: exit 2: $err"
done
help=$("$BIN" summary --help) || fail "summary --help exited $?"
grep -q "usage: resnet_mpi summary" <<<"$help" || fail "no summary --help"
pass "summary --help"
