#!/usr/bin/python3
"""eval_protocols.sh's PyTorch side: the seed's model (scripts/seed_model.py) with the exported weights
scores the first N Fashion-MNIST test images under each protocol the C program offers, and each must
agree with the program's confusion matrix (at most one image may differ: float rounding can flip a
near-tie):
  clean        the images as they are, batch statistics over the set
  seed         each image i flipped and cropped as in training, with the augmentation the program draws
               for (seed 0x6576616c, epoch -1, record i): scripts/plot.py's bit-exact reproduction
  +flip        the logits of each image and of its mirror averaged (test-time augmentation)
usage: eval_protocols_check.py OUT.pt DATA_DIR N RESULTS.json   (RESULTS: {"clean none": {...}, ...})"""
import json
import os
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "scripts"))
sys.path.insert(0, here)
import plot  # noqa: E402
from torch_export_check import load_exported  # noqa: E402

EVAL_AUG_SEED, EVAL_AUG_EPOCH = 0x6576616C, -1


def main():
    pt, data_dir, n, results = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.load(open(sys.argv[4]))
    model, _ = load_exported(pt)
    images = plot.idx_item(os.path.join(data_dir, "t10k-images-idx3-ubyte"), 16, 0, n * 784).reshape(n, 1, 28, 28)
    labels = plot.idx_item(os.path.join(data_dir, "t10k-labels-idx1-ubyte"), 8, 0, n).astype(np.int64)
    clean = images.astype(np.float32) / np.float32(255.0)
    augmented = np.stack([plot.augment(clean[i], *plot.augment_params(EVAL_AUG_SEED, EVAL_AUG_EPOCH, i))
                          for i in range(n)])
    worst = 0
    for key, result in sorted(results.items()):
        protocol, tta = key.split()
        x = torch.from_numpy(np.ascontiguousarray(augmented if protocol == "seed" else clean))
        with torch.no_grad():
            logits = model(x)
            if tta == "flip":
                logits = 0.5 * (logits + model(torch.flip(x, dims=[3])))
        predicted = logits.argmax(1).numpy()
        confusion = np.zeros((10, 10), dtype=np.int64)
        np.add.at(confusion, (labels, predicted), 1)
        differ = int(np.abs(confusion - np.array(result["confusion"])).sum()) // 2
        accuracy = float((predicted == labels).mean())
        print(f"{key}: C accuracy {result['accuracy']:.4f}, PyTorch {accuracy:.4f}, images classified "
              f"differently {differ}")
        worst = max(worst, differ)
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
