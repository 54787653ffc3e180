#!/usr/bin/python3
"""torch_export.sh's PyTorch side: load OUT.pt into the seed's model (scripts/seed_model.py) with
strict=True and require its logits on the batch in FIXTURE to equal the C model's within 1e-5.
usage: torch_export_check.py OUT.pt FIXTURE [CHECKPOINT]; with CHECKPOINT, OUT.pt's reference_stats must
be bitwise the checkpoint's statistics of the weights exported (/ema/reference for 'weights': 'ema',
else /reference)."""
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import seed_model  # noqa: E402


def read_fixture(path):
    out = {}
    with open(path, "rb") as f:
        assert f.read(8) == b"RNFX0001"
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            (length,) = struct.unpack("<I", f.read(4))
            name = f.read(length).decode()
            dtype, ndim = struct.unpack("<II", f.read(8))
            dims = struct.unpack("<%dI" % ndim, f.read(4 * ndim))
            out[name] = np.frombuffer(f.read(4 * int(np.prod(dims))), dtype="<f4").reshape(dims)
    return out


def load_exported(pt):
    """(model, config) from torch_export.py's OUT.pt, strict=True, in eval mode (as the seed evaluates:
    batch statistics for its BNs, running statistics for the paper's)."""
    saved = torch.load(pt)
    cfg = saved["config"]
    model = seed_model.build(cfg["arch"], int(cfg["depth"]), int(cfg["in-channels"]), int(cfg["classes"]),
                             int(cfg["image-size"]))
    model.load_state_dict(saved["model_state_dict"], strict=True)
    model.eval()
    if cfg.get("bn-eval") == "reference":
        seed_model.use_reference(model, saved["reference_stats"])
    return model, cfg


def check_reference_stats(pt, checkpoint):
    import h5py

    saved = torch.load(pt)
    group = "ema/reference" if saved.get("weights") == "ema" else "reference"
    with h5py.File(checkpoint, "r") as f:
        want = {name[:-len(".reference")]: ds[()] for name, ds in f[group].items()}
    got = saved["reference_stats"]
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, values in want.items():
        assert np.array_equal(got[name].numpy(), values), f"reference_stats[{name!r}] is not /{group}/{name}"
    print(f"reference_stats are /{group} exactly ({len(want)} BN modules)")


def main():
    pt, fixture = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        check_reference_stats(pt, sys.argv[3])
    model, cfg = load_exported(pt)
    data = read_fixture(fixture)
    with torch.no_grad():
        logits = model(torch.from_numpy(data["images"].copy())).numpy()
    err = np.linalg.norm(logits - data["logits"]) / np.linalg.norm(data["logits"])
    print(f"{cfg['arch']}: PyTorch logits vs C logits relative error {err:.2e}")
    sys.exit(0 if err <= 1e-5 else 1)


if __name__ == "__main__":
    main()
