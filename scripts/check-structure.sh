#!/bin/bash
# The module structure, checked from the source: a module is src/X.c with include/resnet/X.h, and
# X depends on Y when a file of X has the line #include "resnet/Y.h". Fails (exit 1) when the modules
# include each other in a loop (each loop is printed), when a module includes one in a layer above its
# own (the layers are the table below, from the design's LAYOUT.md), when a module has no layer, or
# when HDF5 is called (or hdf5.h included) outside the storage modules h5io and checkpoint.
# Prints the layers with their modules. Usage: scripts/check-structure.sh [REPO_ROOT]
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

# Top to bottom; a module may include modules of its own layer and of the layers below it.
# checkpoint sits above the model and the optimizer because it writes the model's parameter table and
# the optimizer's state; the HDF5 plumbing under it (h5io) and the training state it saves
# (train_state) sit lower. Modules of one layer must not form loops either.
layers='
entry        main
subcommands  train eval bench summary
run          run report
evaluation   evaluate
settings     config
storage      checkpoint metrics
state        train_state
model        resnet
layers       conv conv_direct conv_winograd conv_shape batchnorm layers
optimizer    optim ema
data         dataset
readers      cifar10 idx
imageset     imageset
distribution dist
storage-io   h5io
performance  perf peak stall
util         rng util settings hooks
'

# HDF5 identifiers (H5Fopen, H5T_NATIVE_FLOAT, ...) and <hdf5.h> outside the storage modules: "file:line: text"
storage_files='^(src/h5io\.c|src/checkpoint\.c|include/resnet/h5io\.h):'
stray_hdf5=$(grep -nE '(^|[^A-Za-z0-9_])H5[A-Z]|#[[:space:]]*include[[:space:]]*<hdf5\.h>' src/*.c include/resnet/*.h |
  grep -vE "$storage_files" || true)

# "module target file:line" for every include of a project header
edges=$(grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"resnet/[A-Za-z0-9_]*\.h"' src/*.c include/resnet/*.h |
  sed -E 's|^(([^:]*/)?([A-Za-z0-9_]+)\.[ch]):([0-9]+):.*"resnet/([A-Za-z0-9_]+)\.h".*|\3 \5 \1:\4|' |
  awk '$1 != $2')
# every module, including those without includes
modules=$(for f in src/*.c include/resnet/*.h; do basename "${f%.*}"; done | sort -u)

awk -v layers="$layers" -v modules="$modules" -v stray_hdf5="$stray_hdf5" '
BEGIN {
    n = split(layers, lines, "\n")
    nl = 0
    for (i = 1; i <= n; i++) {
        if (split(lines[i], w, " ") < 2) continue
        nl++
        lname[nl] = w[1]
        for (j = 2; j in w; j++) layer[w[j]] = nl
        delete w
    }
    nm = split(modules, mods, "\n")
    failed = 0
}
{
    from = $1; to = $2; where = $3
    key = from SUBSEP to
    if (!(key in seen)) {
        seen[key] = where
        out[from] = out[from] " " to
    }
}
# v reaches target: fills parent[] for the path
function reaches(v, target,    queue, head, tail, u, k, next_nodes, w) {
    delete parent
    delete visited
    head = 1; tail = 1; queue[1] = v; visited[v] = 1
    while (head <= tail) {
        u = queue[head++]
        if (u == target) return 1
        k = split(out[u], next_nodes, " ")
        for (w = 1; w <= k; w++)
            if (!(next_nodes[w] in visited)) {
                visited[next_nodes[w]] = 1
                parent[next_nodes[w]] = u
                queue[++tail] = next_nodes[w]
            }
    }
    return 0
}
END {
    if (stray_hdf5 != "") {
        n = split(stray_hdf5, stray, "\n")
        for (i = 1; i <= n; i++) {
            match(stray[i], /^[^:]*:[0-9]+:/)
            text = substr(stray[i], RLENGTH + 1)
            sub(/^[ \t]+/, "", text)
            printf "structure: %s HDF5 outside the storage modules (h5io.c, checkpoint.c): %s\n",
                   substr(stray[i], 1, RLENGTH), text
        }
        failed = 1
    }
    for (i = 1; i <= nm; i++)
        if (mods[i] != "" && !(mods[i] in layer)) {
            printf "structure: module %s has no layer (add it to the table in scripts/check-structure.sh)\n", mods[i]
            failed = 1
        }
    # includes that go up
    for (key in seen) {
        split(key, e, SUBSEP)
        if ((e[1] in layer) && (e[2] in layer) && layer[e[2]] < layer[e[1]]) {
            printf "structure: %s: %s (%s) includes resnet/%s.h (%s), a layer above it\n", seen[key], e[1],
                   lname[layer[e[1]]], e[2], lname[layer[e[2]]]
            failed = 1
        }
    }
    # loops: an edge u -> v where v leads back to u; each loop printed once, from its smallest module
    for (key in seen) {
        split(key, e, SUBSEP)
        if (!reaches(e[2], e[1])) continue
        # the way back from v to u, through parent[] from u: the loop is u -> v -> ... -> u
        len = 1; path[1] = e[1]
        for (u = e[1]; u != e[2]; u = parent[u]) path[++len] = parent[u]
        k = 0
        order[++k] = path[1]
        for (j = len; j >= 2; j--) order[++k] = path[j]
        # printed from its alphabetically first module, so that each loop is reported once
        start = 1
        for (j = 2; j <= k; j++) if (order[j] < order[start]) start = j
        text = ""; files = ""
        for (j = 0; j < k; j++) {
            a = order[(start + j - 1) % k + 1]; b = order[(start + j) % k + 1]
            text = text a " -> "
            files = files "\n    " seen[a SUBSEP b] ": " a " includes resnet/" b ".h"
        }
        text = text order[start]
        if (!(text in reported)) {
            reported[text] = 1
            printf "structure: include loop: %s%s\n", text, files
            failed = 1
        }
    }
    print "layers (top to bottom; a module includes only modules of its layer and the layers below):"
    for (l = 1; l <= nl; l++) {
        names = ""
        for (i = 1; i <= nm; i++) if ((mods[i] in layer) && layer[mods[i]] == l) names = names " " mods[i]
        if (names != "") printf "  %-13s%s\n", lname[l], names
    }
    if (failed) print "structure: FAILED"
    else print "structure: ok (no loops, no include goes up, HDF5 only in h5io and checkpoint)"
    exit failed
}' <<< "$edges"
