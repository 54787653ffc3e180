#!/usr/bin/python3
"""Pictures of training runs, from what resnet_mpi leaves in a checkpoint folder.

    /usr/bin/python3 scripts/plot.py RUN_DIR [RUN_DIR ...] [-o OUT] [--data DIR] [--label NAME ...]

Writes into OUT (default: RUN_DIR for one run, ./plots for several):
  curves.png        training loss and validation accuracy against step and against epoch, from each
                    run's metrics.jsonl, several runs overlaid with their labels; restarts (resumes,
                    requeues) are marked where they picked up, and points of an abandoned continuation
                    are replaced by the ones the restart wrote, so steps only increase
  confusion.png     the test confusion matrix of report.json as a heat map, with per-class accuracy
                    (several runs: confusion-<run>.png each)
  augmentation.png  one training image (the seed's choice: record 0 of the training file) as the
                    seed's figure shows it (original, flipped, cropped), and as this program's
                    augmentation (src/dataset.c) transforms it in the first epochs of the run
and adds the pictures to each run's report.md (the images section) and report.json ("images").
The data file comes from the run's settings (report.json, else the checkpoint's /config) or --data.
Needs Debian's python3-matplotlib (and python3-h5py for a folder without report.json).
"""
import argparse
import gzip
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

import matplotlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # also when loaded as a module by path
from metrics_log import LogError, read_points  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IMAGES_BEGIN = "<!-- images: scripts/plot.py replaces this section -->"
IMAGES_END = "<!-- end of images -->"
TRAIN_RECORDS = {"cifar10": 50000, "fashion-mnist": 60000}
LABEL_KEYS = ("lr", "batch-size", "seed", "optimizer", "arch", "depth", "world-size", "threads",
              "weight-decay", "schedule", "sync-bn", "recipe", "dataset", "epochs", "max-steps")


class PlotError(Exception):
    pass


# ---- the program's augmentation (src/rng.c, src/dataset.c), bit for bit ---------------------------

MASK64 = (1 << 64) - 1
AUG_TAG = 0x617567  # "aug"
AUG_PAD = 4
AUG_OFFSETS = 2 * AUG_PAD + 1


def mix64(z):
    """splitmix64's finaliser, as rng.c's mix64."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def rng_hash(seed, a, b, c):
    h = mix64(seed & MASK64)
    h = mix64(h ^ (a & MASK64))
    h = mix64(h ^ (b & MASK64))
    return mix64(h ^ (c & MASK64))


def augment_params(seed, epoch, record):
    """(flip, dy, dx) that dataset_augment_params draws for a record in a 0-based epoch."""
    h = rng_hash(seed, epoch, record, AUG_TAG)
    flip = h & 1
    span = AUG_OFFSETS * AUG_OFFSETS
    limit = (1 << 63) - (1 << 63) % span
    w, k = h >> 1, 1
    while w >= limit:
        w = rng_hash(h, k, record, AUG_TAG) >> 1
        k += 1
    v = w % span
    return flip, v // AUG_OFFSETS, v % AUG_OFFSETS


def augment(image, flip, dy, dx):
    """image [C, H, W]: flipped left-right if flip, then the crop at (dy, dx) of the image zero-padded
    by 4 pixels: out[y][x] = flipped[y + dy - 4][x + dx - 4], 0 in the padding."""
    src = image[:, :, ::-1] if flip else image
    size = image.shape[1]
    padded = np.zeros((image.shape[0], size + 2 * AUG_PAD, size + 2 * AUG_PAD), dtype=image.dtype)
    padded[:, AUG_PAD:AUG_PAD + size, AUG_PAD:AUG_PAD + size] = src
    return padded[:, dy:dy + size, dx:dx + size]


# ---- the data file ---------------------------------------------------------------------------------

def read_record(dataset, data_dir, record):
    """(image [C, H, W] uint8, label) of one training record, as the C readers see it."""
    if dataset == "cifar10":
        path = os.path.join(data_dir, "data_batch_%d.bin" % (record // 10000 + 1))
        try:
            with open(path, "rb") as f:
                f.seek((record % 10000) * 3073)
                raw = f.read(3073)
        except OSError as e:
            raise PlotError("%s: %s" % (path, e.strerror))
        if len(raw) != 3073:
            raise PlotError("%s: too short for record %d" % (path, record))
        return np.frombuffer(raw[1:], dtype=np.uint8).reshape(3, 32, 32), raw[0]
    if dataset == "fashion-mnist":
        images, labels = (os.path.join(data_dir, n) for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
        return idx_item(images, 16, record, 784).reshape(1, 28, 28), int(idx_item(labels, 8, record, 1)[0])
    raise PlotError("unknown data set %r" % dataset)


def idx_item(path, header, index, size):
    for name in (path, path + ".gz"):
        if os.path.exists(name):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(name, "rb") as f:
                f.seek(header + index * size)
                raw = f.read(size)
            if len(raw) != size:
                raise PlotError("%s: too short for record %d" % (name, index))
            return np.frombuffer(raw, dtype=np.uint8)
    raise PlotError("%s[.gz]: not found" % path)


# ---- a run folder ----------------------------------------------------------------------------------

class Run:
    def __init__(self, folder):
        if not os.path.isdir(folder):
            raise PlotError("%s: not a folder" % folder)
        self.folder = folder
        self.name = os.path.basename(os.path.normpath(folder))
        self.report = self._json("report.json")
        self.settings = self.report["settings"] if self.report else self._checkpoint_settings()
        self.points, self.restarts = read_metrics(os.path.join(folder, "metrics.jsonl"))
        self.label = self.name

    def _json(self, name):
        path = os.path.join(self.folder, name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise PlotError("%s: not readable JSON (%s)" % (path, e))

    def _checkpoint_settings(self):
        for name in ("last.h5", "best.h5"):
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                import h5py
                with h5py.File(path, "r") as f:
                    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in f["config"].attrs.items()}
        return {}

    def steps_per_epoch(self):
        batch = int(self.settings.get("batch-size", "0") or 0)
        train = None
        if self.report:
            train = self.report["data"]["train"]
        elif self.settings.get("dataset") in TRAIN_RECORDS:
            limit = int(self.settings.get("limit-train", "0"))
            train = limit or TRAIN_RECORDS[self.settings["dataset"]] - int(self.settings.get("val-size", "5000"))
        if train and batch:
            return math.ceil(train / batch)
        later = [p for p in self.points if p["epoch"] > 1]   # step = (epoch - 1) * steps_per_epoch + batch
        if later:
            return (later[0]["step"] - later[0]["batch"]) // (later[0]["epoch"] - 1)
        return max(p["batch"] for p in self.points)

    def test(self):
        """The test results: report.json's, else the JSON jobs/eval.sbatch leaves beside a checkpoint."""
        if self.report and self.report.get("test"):
            return self.report["test"]
        for name in ("last.test.json", "best.test.json"):
            found = self._json(name)
            if found:
                return found
        return None


def read_metrics(path):
    """Validation points in step order and the steps where the run restarted (metrics_log.py)."""
    if not os.path.exists(path):
        raise PlotError("%s: not found (is this a resnet_mpi checkpoint folder?)" % path)
    try:
        points, restarts = read_points(path, "plot.py")
    except LogError as e:
        raise PlotError(str(e)) from None
    if not points:
        raise PlotError("%s: no validation yet" % path)
    return points, restarts


def label_runs(runs, labels):
    if labels:
        if len(labels) != len(runs):
            raise PlotError("%d --label for %d runs" % (len(labels), len(runs)))
        for run, label in zip(runs, labels):
            run.label = label
        return
    if len(runs) < 2:
        return
    differ = [k for k in LABEL_KEYS if len({r.settings.get(k) for r in runs}) > 1]
    for run in runs:
        extra = ", ".join("%s %s" % (k, run.settings.get(k, "?")) for k in differ)
        run.label = "%s (%s)" % (run.name, extra) if extra else run.name


# ---- the pictures ----------------------------------------------------------------------------------

def plot_curves(runs, path):
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharey="row")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        spe = run.steps_per_epoch()
        step = np.array([p["step"] for p in run.points])
        epoch = np.array([p["epoch"] - 1 + p["batch"] / spe for p in run.points])
        loss = np.array([np.nan if p.get("train_loss") is None else p["train_loss"] for p in run.points])
        acc = np.array([np.nan if p.get("val_acc") is None else p["val_acc"] for p in run.points])
        # --ema: the moving average's accuracy, dashed; best.h5 follows it
        ema = np.array([np.nan if p.get("val_acc_ema") is None else p["val_acc_ema"] for p in run.points])
        followed = ema if np.isfinite(ema).any() else acc
        for col, x in ((0, step), (1, epoch)):
            axes[0][col].plot(x, loss, color=color, marker=".", ms=3, lw=1.2, label=run.label)
            axes[1][col].plot(x, acc, color=color, marker=".", ms=3, lw=1.2, label=run.label)
            if followed is ema:
                axes[1][col].plot(x, ema, color=color, ls="--", marker=".", ms=3, lw=1.2)
            if np.isfinite(followed).any():
                best = int(np.nanargmax(followed))
                axes[1][col].plot(x[best], followed[best], "*", color=color, ms=11, mec="black", mew=0.5)
        for k, start in enumerate(run.restarts):
            at_epoch = start / spe
            for row in (0, 1):
                axes[row][0].axvline(start, color=color, ls=":", lw=1.2,
                                     label="restart" if row == 0 and k == 0 else None)
                axes[row][1].axvline(at_epoch, color=color, ls=":", lw=1.2)
    for col, xlabel in ((0, "step (optimizer updates)"), (1, "epoch")):
        axes[0][col].set_title("train loss (mean of the batches since the previous check)", fontsize=10)
        axes[1][col].set_title("validation accuracy (* best; dashed: --ema's average)", fontsize=10)
        axes[1][col].set_xlabel(xlabel)
        for row in (0, 1):
            axes[row][col].grid(alpha=0.3)
    axes[0][0].set_ylabel("cross entropy")
    axes[1][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(run, test, path):
    confusion = np.array(test["confusion"], dtype=np.int64)
    classes = test.get("classes") or (run.report["data"]["classes"] if run.report else
                                      run.settings.get("class_names", "").split(","))
    rows = confusion.sum(axis=1, keepdims=True)
    share = confusion / np.maximum(rows, 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * k, 1.4 + 0.55 * k))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for t in range(k):
        for p in range(k):
            ax.text(p, t, str(confusion[t, p]), ha="center", va="center", fontsize=8,
                    color="white" if share[t, p] > 0.55 else "black")
    per_class = np.diag(confusion) / np.maximum(rows[:, 0], 1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), ["%s  %.3f" % (c, a) for c, a in zip(classes, per_class)], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class, per-class accuracy")
    correct, total = int(np.trace(confusion)), int(confusion.sum())
    ax.set_title("%s: test accuracy %.4f (%d of %d)" % (run.label, correct / total, correct, total), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def show(ax, image, title):
    """image [C, H, W] uint8 or float in [0, 1]"""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=image.max() if image.dtype != np.uint8 else 255)
    else:
        ax.imshow(np.transpose(image, (1, 2, 0)))
    ax.set_title(title, fontsize=9)
    ax.set_xticks(())
    ax.set_yticks(())


def plot_augmentation(run, data_dir, path, record=0, epochs=3):
    dataset = run.settings.get("dataset", "cifar10")
    seed = int(run.settings.get("seed", "0"))
    image, label = read_record(dataset, data_dir, record)
    names = run.settings.get("class_names", "").split(",")
    name = names[label] if label < len(names) else str(label)
    _, dy, dx = augment_params(seed, 0, record)
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 5.6))
    show(axes[0][0], image, "original (%s)" % name)
    show(axes[0][1], augment(image, 1, AUG_PAD, AUG_PAD), "horizontally flipped")
    show(axes[0][2], augment(image, 0, dy, dx), "padded by 4, cropped\n(crop offset %+d, %+d)" % (dy - AUG_PAD, dx - AUG_PAD))
    for e in range(epochs):
        flip, dy, dx = augment_params(seed, e, record)
        show(axes[1][e], augment(image, flip, dy, dx),
             "epoch %d: %s,\ncrop offset %+d, %+d" % (e + 1, "flipped" if flip else "not flipped", dy - AUG_PAD, dx - AUG_PAD))
    fig.suptitle("training record %d: the seed's figure (top) and what --seed %d draws for it (bottom)" % (record, seed),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- the report ------------------------------------------------------------------------------------

def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp.", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 would hide the report from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_report(run, images):
    """images: [(title, path)] of the pictures of this run: into report.md's images section and
    report.json's "images", with paths relative to the run folder."""
    rel = [(title, os.path.relpath(path, run.folder)) for title, path in images]
    md_path = os.path.join(run.folder, "report.md")
    if os.path.exists(md_path):
        with open(md_path) as f:
            text = f.read()
        section = "%s\n%s\n\nDrawn by `scripts/plot.py` on %s.\n%s" % (
            IMAGES_BEGIN, "\n\n".join("![%s](%s)" % (t, p) for t, p in rel),
            time.strftime("%Y-%m-%d %H:%M:%S"), IMAGES_END)
        start, end = text.find(IMAGES_BEGIN), text.find(IMAGES_END)
        if start >= 0 and end > start:
            text = text[:start] + section + text[end + len(IMAGES_END):]
        else:
            text = text.rstrip("\n") + "\n\n## Images\n\n" + section + "\n"
        write_atomic(md_path, text)
    if run.report is not None:
        run.report["images"] = {t: p for t, p in rel}
        write_atomic(os.path.join(run.folder, "report.json"), json.dumps(run.report, separators=(",", ":")) + "\n")


def data_folder(run, given):
    folder = given or run.settings.get("data")
    if not folder:
        raise PlotError("%s: the run's settings name no data folder: give --data DIR" % run.folder)
    if not os.path.isdir(folder):
        raise PlotError("data folder %s not found (give --data DIR)" % folder)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="checkpoint folders of runs")
    parser.add_argument("-o", "--out", help="folder for the pictures (default: RUN_DIR, or ./plots for several)")
    parser.add_argument("--data", help="the data folder (default: the run's --data setting)")
    parser.add_argument("--label", action="append", help="label of each run in order (default: folder name "
                        "and the settings that differ between the runs)")
    parser.add_argument("--record", type=int, default=0, help="training record of the augmentation figure (0)")
    args = parser.parse_args(argv)
    try:
        runs = [Run(folder) for folder in args.runs]
        label_runs(runs, args.label)
        for run in runs:   # folders of the same name from different places get a number
            same = [r for r in runs if r.name == run.name]
            run.file_name = run.name if len(same) == 1 else "%s-%d" % (run.name, same.index(run) + 1)
        out = args.out or (runs[0].folder if len(runs) == 1 else "plots")
        os.makedirs(out, exist_ok=True)
        curves = os.path.join(out, "curves.png")
        plot_curves(runs, curves)
        written = {run.folder: [("training curves", curves)] for run in runs}
        for run in runs:
            test = run.test()
            if test is None:
                print("plot.py: %s: no test results (report.json of a finished run, or <checkpoint>.test.json): "
                      "no confusion matrix" % run.folder, file=sys.stderr)
                continue
            path = os.path.join(out, "confusion.png" if len(runs) == 1 else "confusion-%s.png" % run.file_name)
            plot_confusion(run, test, path)
            written[run.folder].append(("test confusion matrix", path))
        augmentation = os.path.join(out, "augmentation.png")
        try:
            plot_augmentation(runs[0], data_folder(runs[0], args.data), augmentation, args.record)
            written[runs[0].folder].append(("augmentation", augmentation))
        except PlotError as e:   # the curves and the confusion matrix do not need the data
            print("plot.py: no augmentation figure: %s" % e, file=sys.stderr)
        for run in runs:
            update_report(run, written[run.folder])
    except PlotError as e:
        print("plot.py: error: %s" % e, file=sys.stderr)
        return 1
    for path in dict.fromkeys(p for paths in written.values() for _, p in paths):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
