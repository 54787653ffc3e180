#!/usr/bin/python3
"""Turn a resnet-mpi checkpoint (HDF5) into a PyTorch file for the seed's model.

usage: torch_export.py [--state-dict-only] [--no-optimizer] [--weights raw|ema] CHECKPOINT OUT.pt

By default OUT.pt follows the seed notebook's own saving convention, a dict with
  'model_state_dict'      the model's state_dict (load it with model.load_state_dict(...))
  'optimizer_state_dict'  torch.optim's state_dict for the checkpoint's optimizer (Adam, AdamW or SGD)
                          over model.parameters(), when the checkpoint has optimizer state
  'config'                the checkpoint's /config settings (arch, depth, lr, ... as numbers/strings)
  'reference_stats'       the reference BN statistics of the weights exported (--bn-eval reference):
                          {BN module name: tensor [applications, 2 (mean, var), channels]}, from /reference
                          for the raw weights, from /ema/reference for the moving average; evaluate as
                          the C program does with seed_model.use_reference(model, saved['reference_stats'])
so the seed's loading code works unchanged:
    model = seed_model.build(cfg['arch'], cfg['depth'], cfg['in-channels'], cfg['classes'], cfg['image-size'])
    model.load_state_dict(torch.load('OUT.pt')['model_state_dict'])
With --state-dict-only OUT.pt is the bare model state_dict.

--weights ema exports the moving average of the parameters that a run with --ema keeps (/ema) in place
of the trained parameters (the paper model's BN running statistics stay /model's, as resnet_mpi
evaluates it); the optimizer state, which belongs to the trained parameters, is then left out, and
the payload says 'weights': 'ema'. Its reference_stats are the average's own (/ema/reference): /reference
holds the raw weights' statistics, which normalize the average wrongly. A checkpoint of an earlier
version, with /reference but no /ema/reference, is exported without reference_stats and a one-line note
on stderr (resnet_mpi eval --weights ema measures them from the training data). The default is raw
(/model as it is); a checkpoint of a run with --validate-raw off (the tuned default) holds no /reference
and exports the raw weights without reference_stats, with a like note.

The model is built with scripts/seed_model.py's build() from /config (arch, depth, in-channels,
image-size, classes) and loaded with strict=True: every name and shape must match. Errors are one
line on stderr and exit status 1.
"""
import argparse
import os
import sys
import tempfile

FORMAT = "resnet-mpi checkpoint"
FORMAT_VERSIONS = (1, 2)   # 2 adds checksums; the layout a reader sees is the same
PROG = "torch_export.py"


class ExportError(Exception):
    pass


def _plain(value):
    """An HDF5 attribute value as a plain Python value (str, int, float or list)."""
    import numpy as np
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _setting(config, name, path):
    # the C program writes the command-line spelling (in-channels); accept the Python one too
    for key in (name, name.replace("-", "_")):
        if key in config:
            return config[key]
    raise ExportError(f"{path}: /config has no {name}")


def read_checkpoint(path):
    """(config dict, {name: numpy array} of /model, optimizer dict or None, {name: array} of /ema or None)."""
    import h5py
    import numpy as np

    if not os.path.exists(path):
        raise ExportError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ExportError(f"{path}: not a regular file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ExportError(f"{path}: not an HDF5 file or truncated") from None
    with f:
        if "format" not in f.attrs:
            raise ExportError(f"{path}: not a resnet-mpi checkpoint (no format attribute)")
        fmt = _plain(f.attrs["format"])
        if fmt != FORMAT:
            raise ExportError(f"{path}: not a resnet-mpi checkpoint (format attribute {fmt!r})")
        version = _plain(f.attrs.get("format_version", "missing"))
        if version not in FORMAT_VERSIONS:
            raise ExportError(f"{path}: format_version {version}, this program reads 1 to {FORMAT_VERSIONS[-1]}")
        for group in ("config", "model"):
            if group not in f:
                raise ExportError(f"{path}: missing group /{group}")
        config = {k: _plain(v) for k, v in f["config"].attrs.items()}
        tensors = {}
        for name, ds in f["model"].items():
            if not isinstance(ds, h5py.Dataset):
                raise ExportError(f"{path}: /model/{name} is not a dataset")
            tensors[name] = np.array(ds[()])
        optimizer = None
        if "optimizer" in f:
            g = f["optimizer"]
            optimizer = {k: _plain(v) for k, v in g.attrs.items()}
            optimizer["state"] = {}
            for sub in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if sub in g:
                    optimizer["state"][sub] = {n: np.array(d[()]) for n, d in g[sub].items()}
        averaged = None
        if "ema" in f:
            averaged = {}
            for name, ds in f["ema"].items():
                if name == "reference" and isinstance(ds, h5py.Group):
                    continue   # the average's reference statistics: read_reference
                if not isinstance(ds, h5py.Dataset):
                    raise ExportError(f"{path}: /ema/{name} is not a dataset")
                averaged[name] = np.array(ds[()])
    return config, tensors, optimizer, averaged


def with_average(tensors, averaged, model, path):
    """/model's tensors with every parameter replaced by its moving average from /ema."""
    if averaged is None:
        raise ExportError(f"{path}: no moving average (/ema): the run was trained without --ema")
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in averaged]
    if missing:
        raise ExportError(f"{path}: missing dataset /ema/{missing[0]}")
    extra = [n for n in averaged if n not in names]
    if extra:
        raise ExportError(f"{path}: /ema/{extra[0]} is not a parameter of the model")
    return {**tensors, **{n: averaged[n] for n in names}}


def read_reference(path, group="reference"):
    """{BN module name: numpy array [applications, 2, channels]} of /reference (or group, e.g.
    ema/reference), or None when the file has no such group."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        if group not in f:
            return None
        suffix = ".reference"
        out = {}
        for name, ds in f[group].items():
            if not name.endswith(suffix) or not isinstance(ds, h5py.Dataset) or ds.ndim != 3 or ds.shape[1] != 2:
                raise ExportError(f"{path}: /{group}/{name} is not a [applications, 2, channels] statistic")
            values = np.array(ds[()])
            if (values[:, 1, :] < 0).any():
                raise ExportError(f"{path}: /{group}/{name} holds a negative variance")
            out[name[:-len(suffix)]] = values
        return out


def exported_reference(path, weights):
    """The reference statistics of the weights exported: /reference for the raw ones, /ema/reference for
    the average (None, with a note, when the file has /reference but not the average's)."""
    if weights != "ema":
        reference = read_reference(path)
        if reference is None and read_reference(path, "ema/reference") is not None:
            print(f"{PROG}: note: {path} has no /reference (a run with --validate-raw off measures only the "
                  "average's): reference_stats left out (resnet_mpi eval --weights raw measures them)",
                  file=sys.stderr)
        return reference
    reference = read_reference(path, "ema/reference")
    if reference is None and read_reference(path) is not None:
        print(f"{PROG}: note: {path} has no /ema/reference (written by an earlier version): reference_stats left "
              "out (/reference belongs to the raw weights; resnet_mpi eval --weights ema measures them)",
              file=sys.stderr)
    return reference


def build_model(config, path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import seed_model

    arch = _setting(config, "arch", path)
    depth, in_channels, image_size, classes = (
        int(_setting(config, k, path)) for k in ("depth", "in-channels", "image-size", "classes"))
    try:
        return seed_model.build(arch, depth, in_channels, classes, image_size)
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from None


def model_state_dict(model, tensors, path):
    import torch

    want = model.state_dict()
    missing = [k for k in want if k not in tensors]
    unexpected = [k for k in tensors if k not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing /model/{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"/model/{unexpected[0]} is not in the model"
                         + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        raise ExportError(f"{path}: " + "; ".join(parts))
    sd = {}
    for name, ref in want.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: /model/{name} has shape {list(value.shape)}, "
                              f"the model expects {list(ref.shape)}")
        # num_batches_tracked is an int64 scalar in PyTorch; everything else float32
        sd[name] = torch.tensor(value, dtype=ref.dtype) if ref.dtype == torch.int64 else \
            torch.from_numpy(value.astype("float32", copy=True))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{path}: " + " ".join(str(e).split())) from None
    return model.state_dict()


def optimizer_state_dict(model, optimizer, path):
    """torch.optim's own state_dict, built by a real optimizer so that its format is exactly torch's."""
    import torch

    kind = optimizer.get("type")
    params = list(model.named_parameters())
    lr = float(optimizer.get("lr", 0.0))
    wd = float(optimizer.get("weight_decay", 0.0))
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls([p for _, p in params], lr=lr, weight_decay=wd,
                  betas=(float(optimizer.get("beta1", 0.9)), float(optimizer.get("beta2", 0.999))),
                  eps=float(optimizer.get("eps", 1e-8)))
        slots = ("exp_avg", "exp_avg_sq")
    elif kind == "sgd":
        opt = torch.optim.SGD([p for _, p in params], lr=lr, weight_decay=wd,
                              momentum=float(optimizer.get("momentum", 0.0)),
                              nesterov=bool(optimizer.get("nesterov", 0)))
        slots = ("momentum_buffer",)
    else:
        raise ExportError(f"{path}: unknown optimizer type {kind!r}")
    step = int(optimizer.get("step", 0))
    if step > 0:   # torch keeps no state before the first step
        for name, p in params:
            entry = {}
            for slot in slots:
                table = optimizer["state"].get(slot, {})
                if name not in table:
                    raise ExportError(f"{path}: missing dataset /optimizer/{slot}/{name}")
                value = table[name]
                if tuple(value.shape) != tuple(p.shape):
                    raise ExportError(f"{path}: /optimizer/{slot}/{name} has shape {list(value.shape)}, "
                                      f"the model expects {list(p.shape)}")
                entry[slot] = torch.from_numpy(value.astype("float32", copy=True))
            if kind != "sgd":
                entry["step"] = torch.tensor(float(step))
            opt.state[p] = entry
    return opt.state_dict()


def export(checkpoint, out, state_dict_only=False, with_optimizer=True, weights="raw"):
    import torch

    config, tensors, optimizer, averaged = read_checkpoint(checkpoint)
    model = build_model(config, checkpoint)
    if weights == "ema":
        tensors = with_average(tensors, averaged, model, checkpoint)
    sd = model_state_dict(model, tensors, checkpoint)
    if state_dict_only:
        payload = sd
    else:
        payload = {"model_state_dict": sd, "config": config, "weights": weights}
        if with_optimizer and optimizer is not None and weights == "raw":
            payload["optimizer_state_dict"] = optimizer_state_dict(model, optimizer, checkpoint)
        reference = exported_reference(checkpoint, weights)
        if reference is not None:
            bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
            if set(reference) != bns:
                group = "/ema/reference" if weights == "ema" else "/reference"
                raise ExportError(f"{checkpoint}: {group} does not name this model's BN modules")
            payload["reference_stats"] = {k: torch.from_numpy(v.astype("float32")) for k, v in reference.items()}
    # a temporary file renamed into place: a failed export never leaves half a file at OUT
    folder = os.path.dirname(os.path.abspath(out))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", dir=folder)
    except OSError as e:
        raise ExportError(f"{out}: cannot create: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, out)
    except OSError as e:
        os.unlink(tmp)
        raise ExportError(f"{out}: cannot write: {e.strerror}") from None
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Export a resnet-mpi HDF5 checkpoint to a PyTorch file for the seed's model.",
        epilog="Default output: torch.save({'model_state_dict': ..., 'optimizer_state_dict': ..., 'config': {...}}) "
               "(the seed notebook's convention; optimizer_state_dict only when the checkpoint has optimizer "
               "state). --state-dict-only saves the bare model state_dict. Errors: one line, exit status 1.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a resnet-mpi checkpoint (.h5)")
    parser.add_argument("out", metavar="OUT.pt", help="the PyTorch file to write")
    parser.add_argument("--state-dict-only", action="store_true", help="save only the model's state_dict")
    parser.add_argument("--no-optimizer", action="store_true", help="leave out optimizer_state_dict")
    parser.add_argument("--weights", choices=("raw", "ema"), default="raw",
                        help="the trained parameters (/model, default) or their moving average (/ema, from a "
                             "run with --ema; then without optimizer state)")
    args = parser.parse_args(argv)
    try:
        payload = export(args.checkpoint, args.out, args.state_dict_only, not args.no_optimizer, args.weights)
    except ExportError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    sd = payload if args.state_dict_only else payload["model_state_dict"]
    print(f"{args.out}: {len(sd)} tensors" + (" (the moving average, /ema)" if args.weights == "ema" else "")
          + ("" if args.state_dict_only else
          " + optimizer state" if "optimizer_state_dict" in payload else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
