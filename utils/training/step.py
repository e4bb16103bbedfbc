"""One optimizer step of a run: its random draws, the loss, the gradient, Adam and the EMA update.

**Draws.** Every random draw of step k -- the batch indices, then sigma, then the noise
(``utils.edm.training_draws``) -- comes from a CPU generator seeded by (seed, k) and is made eagerly,
before the arithmetic, so the draws are the same whatever the numerics below; dropout draws from the
global generator seeded by (seed, k) + 1. These are the draws, in the order, of ``utils.edm``'s
``edm_loss`` / ``ve_loss`` / ``dae_loss``, and the default step computes their arithmetic, so it
trains the weights the single-module ``utils/train.py`` trained, bit for bit
(``scripts/check_bit_identity.py``). A run resumed from a checkpoint is bit-for-bit the uninterrupted
one (tests/test_faults.py).

**Numerics** (:func:`utils.training.numerics.numerics`): the choices that change a run's float rounding, all part of its
cache key (``utils.training.store``). The default is the book's reference arithmetic -- float32,
eager, the foreach (non-fused) Adam -- and every lever below is **opt-in**, off unless its variable
is set, because each changes every trained model (and so every ledger number) and the claims'
verdicts have been verified under the default only:

* ``HGB_TRAIN_PRECISION=bf16``: the network runs under ``torch.autocast`` to bfloat16 (fp32 master
  weights; the preconditioning, the loss, Adam and the EMA stay in fp32 / fp64) where bf16 is native:
  a CPU with AMX-BF16 or AVX512-BF16 (``utils.training.numerics.native_bf16``), or CUDA. Elsewhere bf16 would be emulated
  and slower, so the run stays fp32 (and its key says so).
* ``HGB_TRAIN_COMPILE=1``: the loss (preconditioning, network, weighting; AOTAutograd derives its
  backward) is compiled by ``torch.compile`` into one graph (the compiled code is cached on disk and
  shared by the worker processes of ``train_many``).
* ``HGB_TRAIN_ADAM=fused``: one fused kernel for every parameter's Adam update instead of foreach.

``scripts/bench.py`` measures what each lever pays against the plain fp32 step.
"""
from __future__ import annotations

import copy

import torch

from ..edm import denoising_loss, training_draws
from .numerics import DEFAULT_NUMERICS, numerics
from .spec import build_denoiser, ema_halflife_of, learning_rate_of
from .store import use_compile_cache


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2 ** 63 - 1)


class Trainer:
    """The state of one training run: model, EMA copy, optimizer, step counter, loss history."""

    def __init__(self, s: dict, images: torch.Tensor, device: str):
        self.s, self.images, self.device = s, images, device
        self.numerics = numerics(s, device)
        if self.numerics != DEFAULT_NUMERICS:
            use_compile_cache()           # before anything imports inductor (a fused Adam does)
        torch.manual_seed(s["seed"])
        self.model = build_denoiser(s, images.shape[1:]).to(device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema.parameters())
        kind = {"fused": True} if self.numerics["adam"] == "fused" else {"foreach": True}
        self.opt = torch.optim.Adam(self.params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, **kind)
        self.step, self.history = 0, {"step": [], "loss": []}
        self._loss = self._reference_loss if self.numerics == DEFAULT_NUMERICS else self._eager_loss
        if self.numerics["compile"]:
            self._loss = torch.compile(self._eager_loss, fullgraph=True, dynamic=False)

    def _eager_loss(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                            enabled=self.numerics["precision"] == "bf16"):
            return denoising_loss(self.model, x, sigma, noise, self.s["precond"])

    def _reference_loss(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return denoising_loss(self.model, x, sigma, noise, self.s["precond"])

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "history": self.history, "spec": self.s}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.history = state["step"], state["history"]

    def draws(self, step: int):
        """``(x, sigma, noise)`` of optimizer step ``step`` (0-based): a batch of training images and
        its noise, all drawn from the generator of (seed, step)."""
        s = self.s
        g = torch.Generator().manual_seed(_step_seed(s["seed"], step))
        idx = torch.randint(len(self.images), (s["batch_size"],), generator=g)
        x = self.images[idx]
        sigma, noise = training_draws(s["precond"], x, g, s["sigma_uniform_share"], s["dae_sigma"])
        return x, sigma, noise

    def one_step(self) -> float:
        s = self.s
        x, sigma, noise = self.draws(self.step)
        for group in self.opt.param_groups:
            group["lr"] = learning_rate_of(s, self.step + 1)
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None):
            torch.manual_seed(_step_seed(s["seed"], self.step) + 1)            # dropout
            loss = self._loss(x, sigma, noise)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        # EDM passes gradients through nan_to_num; it changes nothing unless a gradient is not finite
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            for gr in grads:
                torch.nan_to_num(gr, nan=0.0, posinf=1e5, neginf=-1e5, out=gr)
        self.opt.step()
        self.step += 1
        beta = 0.5 ** (1.0 / max(ema_halflife_of(s, self.step), 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.params, 1.0 - beta)
        value = float(loss.detach())
        self.history["step"].append(self.step)
        self.history["loss"].append(value)
        return value
