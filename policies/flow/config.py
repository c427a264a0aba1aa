"""Config shape of the flow policy (`policy=flow`): which weights, and how a committed
prefix reaches the chunk (`rtc`), with real-time chunking's hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from policies.config import PolicyConfig, PolicyConfigError

VARIANTS = ("none", "guidance", "training")
"""How the committed prefix reaches the chunk (`policy.rtc`). Here, not beside the policy:
the config is read where torch is not installed (the robot's side, `tests/test_extras.py`)."""


def checked_rtc(rtc: str) -> str:
    """`rtc` if it is one of VARIANTS; else PolicyConfigError naming `policy.rtc`."""
    if rtc not in VARIANTS:
        raise PolicyConfigError(f"policy.rtc={rtc!r}: expected one of {list(VARIANTS)}")
    return rtc


@dataclass
class FlowPolicyConfig(PolicyConfig):
    """The flow-matching chunk policy (`python -m policies.flow.train`)."""

    name: str = "flow"
    weights: Optional[str] = None
    """A .safetensors file; None uses policies/weights/flow_<env>.safetensors."""
    rtc: str = "guidance"
    """none: ignore the prefix (not delay-aware); guidance: real-time chunking's guided
    inpainting; training: the prefix given as clean actions (training-time conditioning)."""
    denoise_steps: int = 10
    """Euler steps from noise to a chunk."""
    guidance_weight: float = 10.0
    """RTC's clip on the guidance weight (beta). The paper uses 5; on this model 10 joins
    chunks more smoothly and keeps more episodes at 300 ms (docs/measurements.md)."""
    execution_horizon: Optional[int] = None
    """RTC's s: actions executed per chunk before the next is asked for; the soft weights
    reach 0 there. None: the chunk size."""

    def __post_init__(self) -> None:
        super().__post_init__()
        checked_rtc(self.rtc)
        if self.denoise_steps < 1:
            raise PolicyConfigError(f"policy.denoise_steps={self.denoise_steps}: must be >= 1")
        if not self.guidance_weight > 0:
            raise PolicyConfigError(f"policy.guidance_weight={self.guidance_weight}: must be > 0")
        if self.execution_horizon is not None and not (
                1 <= self.execution_horizon <= self.chunk_size):
            raise PolicyConfigError(f"policy.execution_horizon={self.execution_horizon}: must be "
                                    f"in 1..chunk_size={self.chunk_size}")
