"""PyTorch side of ``bench_cpu_runtime``: the same Burgess 64x64 encoder/VAE, the same attack.

Run by ``bench_cpu_runtime`` with an interpreter that has torch (CPU wheel:
``pip install torch==2.13.0``); it reads the JAX encoder's weights, inputs and clean codes
from an ``.npz``, checks that its encoder reproduces the codes, and times

* the 40-step L-inf sign-PGD on Eq. 4 of 000 (``||mu(x+d) - mu(x)||^2``, random start in the
  ball, step eps/4, projection onto ball and pixel box), written as plain autograd code at
  batch 1 and batch 64 — what a PyTorch user would write;
* one training step of the whole VAE (encoder + transposed-conv decoder, Bernoulli
  ELBO, Adam) at batch 64, torch's own initialisation (the step's cost does not depend on
  the weights).

Prints one JSON object. Not imported by the library or the tests.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, latent: int, side: int = 64, ch: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else ch, ch, 4, 2, 1) for i in range(4)])
        self.d0, self.d1 = nn.Linear((side // 16) ** 2 * ch, hidden), nn.Linear(hidden, hidden)
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x  # NCHW
        for c in self.convs:
            h = torch.relu(c(h))
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # flatten in JAX's NHWC order
        h = torch.relu(self.d1(torch.relu(self.d0(h))))
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    def __init__(self, latent: int, side: int = 64, ch: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.ch, self.s = ch, side // 16
        self.d = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, self.s**2 * ch),
            nn.ReLU(),
        )
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(ch, ch if i < 3 else 3, 4, 2, 1) for i in range(4)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.d(z).reshape(z.shape[0], self.s, self.s, self.ch).permute(0, 3, 1, 2)
        for i, up in enumerate(self.ups):
            h = up(h)
            if i < 3:
                h = torch.relu(h)
        return h


def load_encoder(weights: dict[str, np.ndarray], latent: int, side: int) -> Encoder:
    enc = Encoder(latent, side)
    with torch.no_grad():
        for i, c in enumerate(enc.convs):
            c.weight.copy_(torch.from_numpy(weights[f"conv{i}_kernel"].transpose(3, 2, 0, 1)))
            c.bias.copy_(torch.from_numpy(weights[f"conv{i}_bias"]))
        for name in ("d0", "d1", "mu", "logvar"):
            lin = getattr(enc, name)
            lin.weight.copy_(torch.from_numpy(weights[f"{name}_kernel"].T))
            lin.bias.copy_(torch.from_numpy(weights[f"{name}_bias"]))
    return enc


def attack(enc: Encoder, x: torch.Tensor, eps: float, steps: int, gen: torch.Generator):
    with torch.no_grad():
        mu0 = enc(x)[0]
    d = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    d = (x + d).clamp(0, 1) - x
    for _ in range(steps):
        d.requires_grad_(True)
        obj = ((enc(x + d)[0] - mu0) ** 2).sum()
        (g,) = torch.autograd.grad(obj, d)
        with torch.no_grad():
            d = (d + eps / 4 * g.sign()).clamp(-eps, eps)
            d = (x + d).clamp(0, 1) - x
    return d.detach()


def best_time(fn, reps: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(path: str) -> int:
    torch.set_num_threads(torch.get_num_threads())
    data = dict(np.load(path))
    latent = int(data["latent"])
    steps = int(data["steps"])
    eps = float(data["eps"])
    side = int(data["x"].shape[1])
    enc = load_encoder(data, latent, side)
    x = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        mu = enc(x)[0].numpy()
    out: dict[str, float | str] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "max_abs_code_diff": float(np.max(np.abs(mu - data["mu"]))),
    }
    gen = torch.Generator().manual_seed(0)
    for b in (1, 64):
        xb = x[:b]
        reps = 64 // b if b == 1 else 1
        t = best_time(
            lambda xb=xb, reps=reps: [attack(enc, xb, eps, steps, gen) for _ in range(reps)]
        )
        out[f"attack_b{b}_image_steps_per_s"] = b * reps * steps / t
    # training step of the whole VAE at batch 64
    dec = Decoder(latent, side)
    model = nn.ModuleList([enc, dec])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xb = x[:64]

    def train_steps(n: int = 5) -> None:
        for _ in range(n):
            m, lv = enc(xb)
            z = m + torch.randn(m.shape, generator=gen) * (0.5 * lv).exp()
            logits = dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kl = 0.5 * (m**2 + lv.exp() - 1 - lv).sum()
            loss = (rec + kl) / xb.shape[0]
            opt.zero_grad()
            loss.backward()
            opt.step()

    out["train_b64_ms_per_step"] = best_time(train_steps) / 5 * 1e3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
