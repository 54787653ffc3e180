"""The rows torchsummary prints for the PyTorch reference model (scripts/seed_model.py), computed the way
torchsummary 1.5 does: a forward hook on every module except containers and the model itself, one row
per call with the output shape and the module's own weight + bias sizes. For each model, "== SPEC",
then one row a line, "Type [-1, C, H, W] PARAMS", then "total LISTED UNIQUE" (UNIQUE: the sum of
model.parameters()). One process for all models: importing torch is the slow part.

usage: torchsummary_rows.py ARCH:DEPTH:IN_CHANNELS:IMAGE_SIZE:CLASSES ...
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import seed_model  # noqa: E402

# seed_model.py generalises two names: the seed's AvgPool2d(8) is a global pool, and the paper block
# is He et al.'s BasicBlock
NAMES = {"AdaptiveAvgPool2d": "AvgPool2d", "PaperBlock": "BasicBlock"}


def rows(model, input_size):
    found, hooks = [], []

    def hook(module, inputs, output):
        params = 0
        for attr in ("weight", "bias"):
            tensor = getattr(module, attr, None)
            if tensor is not None and hasattr(tensor, "size"):
                params += tensor.numel()
        name = type(module).__name__
        found.append((NAMES.get(name, name), [-1] + list(output.shape[1:]), params))

    for module in model.modules():
        if not isinstance(module, (nn.Sequential, nn.ModuleList)) and module is not model:
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(2, *input_size))
    for h in hooks:
        h.remove()
    return found


def main():
    for spec in sys.argv[1:]:
        arch, *numbers = spec.split(":")
        depth, channels, size, classes = map(int, numbers)
        model = seed_model.build(arch, depth, channels, classes, size)
        print("== %s" % spec)
        listed = 0
        for name, shape, params in rows(model, (channels, size, size)):
            print("%s %s %d" % (name, shape, params))
            listed += params
        print("total %d %d" % (listed, seed_model.count_params(model)))


if __name__ == "__main__":
    main()
