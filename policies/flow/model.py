"""A flow-matching action-chunk model and the ways to sample it: plain, with real-time
chunking's guided inpainting, and with the prefix given as clean actions.

Flow matching as pi0 trains it: a chunk A and noise e mix as A_t = t A + (1 - t) e, and the
network learns the velocity A - e at (A_t, t), conditioned on the observation; sampling
integrates from noise (t = 0) to a chunk (t = 1) in a few Euler steps. The network takes a
time per action (not one per chunk) so that actions already fixed can be given as clean
(t = 1): that is training-time action conditioning (Black et al., "Training-Time Action
Conditioning for Efficient Real-Time Chunking", 2025). The same network, sampled with one
time for all actions, runs plain or with real-time chunking's guidance (Black, Galliker,
Levine, "Real-Time Execution of Action Chunking Flow Policies", 2025, Algorithm 1): at each
step the clean chunk the network predicts is pulled towards the actions the robot will
execute anyway (the committed prefix, weight 1) and towards the rest of the previous chunk
(weights decaying exponentially to 0 at the execution horizon), by a vector-Jacobian product
through the network, with the guidance weight clipped as the paper does.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VelocityNet(nn.Module):
    """(normalized state, noisy chunk H x A, time per action H) -> velocity H x A."""

    def __init__(self, state_dim: int, horizon: int, action_dim: int, hidden: int = 512,
                 layers: int = 4):
        super().__init__()
        self.state_dim, self.horizon, self.action_dim = state_dim, horizon, action_dim
        self.hidden = hidden
        self.layers = layers
        width = state_dim + horizon * action_dim + 3 * horizon
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(width if i == 0 else hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, horizon * action_dim))

    def forward(self, state: torch.Tensor, chunk: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """state (B, S), chunk (B, H, A), t (B, H) in [0, 1] -> velocity (B, H, A)."""
        features = [state, chunk.flatten(1), t, torch.sin(math.pi * t), torch.cos(math.pi * t)]
        out = self.net(torch.cat(features, dim=1))
        return out.view(-1, self.horizon, self.action_dim)


def prefix_weights(horizon: int, delay: int, execution_horizon: int,
                   overlap: int | None = None) -> torch.Tensor:
    """RTC's soft mask W (H): 1 on the d frozen actions, c_i (e^c_i - 1) / (e - 1) with
    c_i = (H - s - i) / (H - s - d + 1) for d <= i < H - s, 0 from the execution horizon s
    on; `overlap` (the previous chunk's actions known from index 0) cuts it further."""
    weights = torch.zeros(horizon)
    weights[:delay] = 1.0
    end = horizon - execution_horizon
    if overlap is not None:
        end = min(end, overlap)
    for i in range(delay, end):
        c = (horizon - execution_horizon - i) / (horizon - execution_horizon - delay + 1)
        weights[i] = c * (math.exp(c) - 1.0) / (math.e - 1.0)
    return weights


def sample(net: VelocityNet, state: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler integration from `noise` (1, H, A) at t = 0 to a chunk at t = 1."""
    chunk = noise
    for k in range(steps):
        t = torch.full(chunk.shape[:2], k / steps)
        chunk = chunk + net(state, chunk, t) / steps
    return chunk


def sample_conditioned(net: VelocityNet, state: torch.Tensor, noise: torch.Tensor,
                       steps: int, prefix: torch.Tensor) -> torch.Tensor:
    """Training-time conditioning: the d prefix actions are given clean (t = 1) and held;
    only the rest is integrated."""
    d = prefix.shape[0]
    clean = torch.zeros_like(noise)
    clean[0, :d] = prefix
    known = torch.zeros(noise.shape[:2], dtype=torch.bool)
    known[:, :d] = True
    return sample_conditioned_rows(net, state, noise, steps, clean, known)


def sample_conditioned_rows(net: VelocityNet, state: torch.Tensor, noise: torch.Tensor,
                            steps: int, clean: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Training-time conditioning of a batch whose rows have prefixes of their own: where
    `known` (B, H) is set, the action is `clean` (B, H, A), given at t = 1 and held."""
    chunk = torch.where(known.unsqueeze(-1), clean, noise)
    for k in range(steps):
        t = torch.where(known, 1.0, k / steps)
        velocity = net(state, chunk, t)
        chunk = torch.where(known.unsqueeze(-1), chunk, chunk + velocity / steps)
    return chunk


def sample_guided(net: VelocityNet, state: torch.Tensor, noise: torch.Tensor, steps: int,
                  target: torch.Tensor, weights: torch.Tensor, max_guidance: float) -> torch.Tensor:
    """RTC's guided inpainting (Algorithm 1): `target` (H, A) holds the actions to match
    (the prefix, then the previous chunk's rest), `weights` (H) how much each counts; or,
    for a batch whose rows have prefixes of their own, (B, H, A) and (B, H). A row of zero
    weights is sampled plainly (its guidance gradient is zero)."""
    chunk = noise
    if target.dim() == 2:
        target, weights = target.unsqueeze(0), weights.unsqueeze(0)
    w = weights.unsqueeze(-1)
    for k in range(steps):
        tau = k / steps
        t = torch.full(chunk.shape[:2], tau)
        with torch.enable_grad():
            x = chunk.detach().requires_grad_(True)
            velocity = net(state, x, t)
            predicted = x + (1.0 - tau) * velocity
            error = ((target - predicted) * w).detach()
            (gradient,) = torch.autograd.grad(predicted, x, grad_outputs=error)
        r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
        clip = max_guidance if tau == 0.0 else min(max_guidance, (1.0 - tau) / (tau * r2))
        chunk = (chunk + (velocity.detach() + clip * gradient) / steps).detach()
    return chunk
