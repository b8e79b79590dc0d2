"""PyTorch reference for mnist-ae's presets: the same architectures, data scaling, Adam
settings and epochs, timed the same way (training images per second, validation excluded).

    python bench/pytorch_ref.py --model conv64 --epochs 10 --batch-size 32 --threads 2 \
        --data-dir ../shared/data/mnist

A model of your own: `--module W.py`, the module `mnist-ae export RUN --torch W.safetensors`
writes (its own PyTorch initialisation is used, not the run's weights); `--tanh` when its
output is tanh (data in [-1, 1]).

With --compile the whole step (forward, backward, Adam) goes through `torch.compile`; its two
warm-up steps (one per batch shape, where compiling happens) train too but are not timed.

`--device cuda` runs the model, the data and the step on the GPU (timings wait for it).

Prints one JSON line: model, epochs, batch_size, threads, torch, device, compiled, images_per_sec
(over all epochs), epoch_images_per_sec, flush_denormal, test_mse.

The vae trains on mnist-ae's loss for it: the negative ELBO per image, binary cross-entropy on
logits summed over pixels plus the KL divergence of the code from N(0, I), with fresh normal
noise for each batch; its test MSE is of the reconstruction from the code's mean.
"""
import argparse
import gzip
import json
import os
import time

import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import PRESETS, TANH  # noqa: E402


def read_idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    if magic == 2051:
        n, r, c = (int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, r, c)
    n = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw, np.uint8, offset=8)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="conv64", choices=list(PRESETS) + ["custom"],
                   help="a preset, or custom with --module")
    p.add_argument("--module", help="the Autoencoder of a module written by `mnist-ae export --torch`")
    p.add_argument("--tanh", action="store_true", help="the --module's output is tanh: data in [-1, 1]")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (mnist-ae's --lr)")
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--data-dir", default=os.environ.get("MNIST_AE_DATA", "../shared/data/mnist"))
    p.add_argument("--init", help="start from this state dict (safetensors, e.g. `mnist-ae export --torch` of an\n"
                   "untrained run) instead of PyTorch's own initialisation")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the whole training step; two warm-up steps (compiling) are not timed")
    p.add_argument("--flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True): denormal floats computed as zero (mnist-ae does this)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the model, the data and the step on the GPU")
    p.add_argument("--save", help="write the trained state dict here (safetensors), for `mnist-ae import`")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.flush_denormal and not torch.set_flush_denormal(True):
        sys.exit("this CPU cannot flush denormals")
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if a.module:
        import importlib.util
        spec = importlib.util.spec_from_file_location("exported", a.module)
        exported = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(exported)
        model = exported.Autoencoder()
    elif a.model == "custom":
        sys.exit("--model custom needs --module")
    else:
        model = PRESETS[a.model](a.latent_dim) if a.latent_dim else PRESETS[a.model]()
    if a.init:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(a.init))
    tanh = a.tanh if a.module else a.model in TANH
    d = a.data_dir
    xtr = read_idx(f"{d}/train-images-idx3-ubyte.gz")
    xte = read_idx(f"{d}/t10k-images-idx3-ubyte.gz")
    rng = np.random.default_rng(a.seed)
    keep = np.sort(rng.permutation(len(xtr))[int(round(len(xtr) * a.valid_fraction)):])
    scale = (lambda x: torch.from_numpy(x.astype(np.float32) / 127.5 - 1)) if tanh else \
        (lambda x: torch.from_numpy(x.astype(np.float32) / 255.0))
    xtr, xte = scale(xtr[keep]).to(dev), scale(xte).to(dev)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = nn.MSELoss()

    def sync():
        """Waits for the GPU's queued work, so that timings cover it."""
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def vae_loss(x):
        logits, mu, logvar = model.elbo_parts(x, torch.randn(len(x), mu_dim, device=dev))
        recon = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum()
        return (recon + kl) / len(x)

    mu_dim = model.fc_mu.out_features if hasattr(model, "elbo_parts") else 0

    def step(x):
        loss = vae_loss(x) if mu_dim else loss_fn(model.reconstruct(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    if a.compile:
        step = torch.compile(step)
        # Compiling happens at the first call of each batch shape: a whole batch and the last,
        # shorter one.
        for n in {a.batch_size, len(xtr) % a.batch_size or a.batch_size}:
            step(xtr[:n])
        sync()
    seen, seconds, per_epoch = 0, 0.0, []
    for _ in range(a.epochs):
        perm = torch.randperm(len(xtr), device=dev)
        sync()
        t0 = time.perf_counter()
        for i in range(0, len(xtr), a.batch_size):
            step(xtr[perm[i:i + a.batch_size]])
        sync()
        dt = time.perf_counter() - t0
        seconds += dt
        seen += len(xtr)
        per_epoch.append(round(len(xtr) / dt))
    model.eval()  # batch norm and dropout in inference mode, as mnist-ae evaluates
    with torch.no_grad():
        mse = sum(((model.reconstruct(xte[i:i + 1000]) - xte[i:i + 1000]) ** 2).sum().item()
                  for i in range(0, len(xte), 1000)) / xte.numel()
    if a.save:
        from safetensors.torch import save_file
        save_file(model.state_dict(), a.save)
    print(json.dumps({"model": a.model, "epochs": a.epochs, "batch_size": a.batch_size, "threads": a.threads,
                      "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                      "compiled": a.compile, "images_per_sec": seen / seconds,
                      "epoch_images_per_sec": per_epoch, "flush_denormal": a.flush_denormal, "test_mse": mse}))


if __name__ == "__main__":
    main()
