#!/usr/bin/python3
"""The yardstick: the seed's PyTorch model (scripts/seed_model.py) timed the way `resnet_mpi bench`
times itself: full training steps (forward, backward, Adam step) on synthetic data, then the seed's
validation (one batch-statistics forward over 5,000 images). Prints images/s for both and the peak RSS.
Run with Debian's /usr/bin/python3 (python3-torch)."""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="seed", choices=seed_model.ARCHS)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-images", type=int, default=5000)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = seed_model.build(args.arch, args.depth)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    model.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            start = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    train_ips = args.batch_size * args.steps / train_s
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # the seed validates with model.eval(), which for its BNs (no running stats) is batch statistics
    xe = torch.rand(args.eval_images, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model(xe)
        start = time.perf_counter()
        rounds = 2
        for _ in range(rounds):
            model(xe)
        eval_ips = args.eval_images * rounds / (time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {torch.__version__}: {args.arch} depth {args.depth}, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.steps} steps after {args.warmup} warm-up")
    print(f"train: {train_ips:.1f} images/s, {1000 * train_s / args.steps:.1f} ms/step")
    print(f"eval: {eval_ips:.1f} images/s (batch statistics over {args.eval_images} images)")
    print(f"peak memory: {train_rss:.0f} MiB training, {rss:.0f} MiB with the {args.eval_images}-image evaluation")


if __name__ == "__main__":
    main()
