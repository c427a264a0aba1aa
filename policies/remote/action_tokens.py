"""OpenVLA's action de-tokenization, for servers that hand back raw token ids (SGLang's
`/generate`) instead of actions (deploy.py's `/act` does this step on the server).

It restates, operation for operation, openvla/openvla `prismatic/vla/action_tokenizer.py`
(`ActionTokenizer`) and `prismatic/extern/hf/modeling_prismatic.py`
(`OpenVLAForActionPrediction.predict_action`), so a token decoded here is bit-identical to
what `predict_action` returns:

- `bins = np.linspace(-1, 1, n_bins)` with `n_bins = 256`; `bin_centers` are the 255
  midpoints `(bins[:-1] + bins[1:]) / 2`.
- `vocab_size = text_config.vocab_size - pad_to_multiple_of = 32064 - 64 = 32000` for
  OpenVLA-7B (the Llama-2 vocabulary; the 64 padding rows are not action tokens).
- The tokenizer writes `vocab_size - np.digitize(clip(a, -1, 1), bins)`, so action tokens are
  31744..31999, and the order is reversed: 31999 is the lowest bin, 31744 the highest.
- Decoding: `discretized = vocab_size - token_id`, then
  `bin_centers[clip(discretized - 1, 0, n_bins - 2)]`: token 31999 -> -254/255,
  31872 -> 0, 31745 and 31744 -> +254/255 (digitize's index 256 folds into the last bin).
- Un-normalization with the dataset statistics of one `unnorm_key`:
  `where(mask, 0.5 * (x + 1) * (q99 - q01) + q01, x)`; `mask` (absent = all true) leaves
  the axes that were never normalized, e.g. LIBERO's gripper, in [-1, 1].

Where `predict_action` silently clips any id (an EOS or a text token becomes an extreme
action), we refuse ids outside 31744..31999 with `TokenOutOfRange`.

The SGLang VLA doc ("Action Token Format"; our copy: shared/reference/
sglang-openvla-serving.md) decodes with
`(tok - 31744) / 255 * 2 - 1`. That is not OpenVLA's mapping: it runs the token order the
wrong way and uses bin edges, not centres. For every token 31745..31999,
`doc(tok) = 1/255 - openvla(tok)`: each axis is mirrored, off by 1/255 (0.0039) at the
centre token 31872 and by 509/255 (1.996, the whole range) at the ends (31744 gives -1 where
OpenVLA gives +254/255). It also skips un-normalization.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPENVLA_VOCAB_SIZE = 32000
"""OpenVLA-7B's `vocab_size` for de-tokenization (32064 rows minus 64 padding)."""

N_BINS = 256
"""Bins per action axis (`OpenVLAConfig.n_action_bins`)."""

LIBERO_SPATIAL_STATISTICS = Path(__file__).with_name("openvla_libero_spatial_statistics.json")
"""The `dataset_statistics.json` of `openvla/openvla-7b-finetuned-libero-spatial`
(https://huggingface.co/openvla/openvla-7b-finetuned-libero-spatial/raw/main/
dataset_statistics.json, after commit d923f6e "Modify unnorm_key"), unnorm_key
`libero_spatial`; numbers copied verbatim."""


class ActionTokenError(ValueError):
    """Token ids or dataset statistics that cannot be turned into an action."""


class TokenOutOfRange(ActionTokenError):
    """A token id outside the action range (a text token, EOS, padding): the model did not
    produce an action, and OpenVLA's own decoder would have clipped it silently."""


class TokenCountMismatch(ActionTokenError):
    """The number of token ids differs from the action dimension."""


class UnknownUnnormKey(ActionTokenError):
    """The `unnorm_key` is not in the dataset statistics; names the keys that are."""


class DatasetStatisticsError(ActionTokenError):
    """A dataset-statistics file or entry that is not OpenVLA's format (missing q01/q99,
    lengths that differ, a non-boolean mask, non-finite values)."""


def action_token_range(vocab_size: int = OPENVLA_VOCAB_SIZE, n_bins: int = N_BINS) -> range:
    """The ids OpenVLA's `ActionTokenizer` can write: `vocab_size - n_bins` up to
    `vocab_size - 1` (31744..31999 for OpenVLA-7B)."""
    return range(vocab_size - n_bins, vocab_size)


def bin_centers(n_bins: int = N_BINS) -> np.ndarray:
    """The (n_bins - 1,) float64 centres of `linspace(-1, 1, n_bins)`, as OpenVLA computes
    them."""
    bins = np.linspace(-1, 1, n_bins)
    return (bins[:-1] + bins[1:]) / 2.0


@dataclass(frozen=True, eq=False)
class ActionStatistics:
    """The action statistics of one dataset (`norm_stats[unnorm_key]["action"]`)."""

    unnorm_key: str
    q01: np.ndarray
    """(action_dim,) float64 1st percentile, the image of normalized -1."""
    q99: np.ndarray
    """(action_dim,) float64 99th percentile, the image of normalized +1."""
    mask: np.ndarray
    """(action_dim,) bool: True where the axis was normalized (and is un-normalized)."""

    @property
    def action_dim(self) -> int:
        """Axes per action (`predict_action`'s `get_action_dim`: `len(q01)`)."""
        return int(self.q01.shape[0])


def _finite_vector(value: object, what: str) -> np.ndarray:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise DatasetStatisticsError(f"{what} must be a non-empty list of numbers, "
                                     f"got {value!r}")
    array = np.array(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise DatasetStatisticsError(f"{what} has non-finite values: {value!r}")
    return array


def action_statistics(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> ActionStatistics:
    """The action statistics of `unnorm_key` in a `dataset_statistics.json` mapping. With
    `unnorm_key=None` the mapping must hold exactly one dataset, as in `predict_action`.

    Raises:
        UnknownUnnormKey: `unnorm_key` is not a key (or is None with several); names them.
        DatasetStatisticsError: the entry lacks action q01/q99, or they (and mask) differ
            in length, hold non-finite values, or q99 < q01.
    """
    known = sorted(norm_stats)
    if unnorm_key is None:
        if len(known) != 1:
            raise UnknownUnnormKey(f"the statistics hold {len(known)} datasets; choose an "
                                   f"unnorm_key from {known}")
        unnorm_key = known[0]
    if unnorm_key not in norm_stats:
        raise UnknownUnnormKey(f"unnorm_key {unnorm_key!r} is not in the dataset statistics; "
                               f"known keys: {known}")
    entry = norm_stats[unnorm_key]
    action = entry.get("action") if isinstance(entry, Mapping) else None
    if not isinstance(action, Mapping):
        raise DatasetStatisticsError(f"{unnorm_key!r} has no 'action' statistics")
    where = f"{unnorm_key}.action"
    q01 = _finite_vector(action.get("q01"), f"{where}.q01")
    q99 = _finite_vector(action.get("q99"), f"{where}.q99")
    mask_value = action.get("mask", [True] * len(q01))
    if not isinstance(mask_value, list) or not all(isinstance(m, bool) for m in mask_value):
        raise DatasetStatisticsError(f"{where}.mask must be a list of booleans, "
                                     f"got {mask_value!r}")
    mask = np.array(mask_value, dtype=bool)
    if not (len(q01) == len(q99) == len(mask)):
        raise DatasetStatisticsError(f"{where}: q01, q99 and mask have lengths "
                                     f"{len(q01)}, {len(q99)}, {len(mask)}")
    if np.any(q99 < q01):
        raise DatasetStatisticsError(f"{where}: q99 < q01 on axes "
                                     f"{np.flatnonzero(q99 < q01).tolist()}")
    return ActionStatistics(unnorm_key=unnorm_key, q01=q01, q99=q99, mask=mask)


def load_action_statistics(path: str | Path, unnorm_key: str | None) -> ActionStatistics:
    """`action_statistics` of the `dataset_statistics.json` at `path`.

    Raises:
        DatasetStatisticsError: the file is missing, not JSON, or not a JSON object.
        UnknownUnnormKey: as `action_statistics`.
    """
    try:
        norm_stats = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetStatisticsError(f"cannot read dataset statistics {path}: {exc}") from exc
    if not isinstance(norm_stats, dict):
        raise DatasetStatisticsError(f"{path}: expected a JSON object of datasets, "
                                     f"got {type(norm_stats).__name__}")
    return action_statistics(norm_stats, unnorm_key)


def normalized_actions(token_ids: Sequence[int] | np.ndarray, *, action_dim: int,
                       vocab_size: int = OPENVLA_VOCAB_SIZE, n_bins: int = N_BINS) -> np.ndarray:
    """The (action_dim,) float64 bin centres in [-1, 1] for OpenVLA action token ids.

    Raises:
        TokenCountMismatch: not exactly `action_dim` ids.
        TokenOutOfRange: an id that is not an integer in `action_token_range`; names each
            offending position and id.
    """
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.shape[0] != action_dim:
        raise TokenCountMismatch(f"expected {action_dim} action token ids, got shape "
                                 f"{ids.shape}: {ids.tolist()}")
    valid = action_token_range(vocab_size, n_bins)
    if ids.dtype.kind not in "iu":
        raise TokenOutOfRange(f"token ids must be integers in {valid.start}..{valid.stop - 1}, "
                              f"got dtype {ids.dtype}: {ids.tolist()}")
    outside = [(i, int(t)) for i, t in enumerate(ids) if int(t) not in valid]
    if outside:
        raise TokenOutOfRange(f"token ids outside the action range {valid.start}.."
                              f"{valid.stop - 1} (position, id): {outside}")
    centers = bin_centers(n_bins)
    discretized = vocab_size - ids.astype(np.int64)
    discretized = np.clip(discretized - 1, a_min=0, a_max=centers.shape[0] - 1)
    return centers[discretized]


def unnormalize(normalized: np.ndarray, statistics: ActionStatistics) -> np.ndarray:
    """`normalized` actions in [-1, 1] mapped to the dataset's scale, where `mask` says so:
    `0.5 * (x + 1) * (q99 - q01) + q01` (predict_action's expression, same operation order,
    so results are bit-identical)."""
    action_high, action_low = statistics.q99, statistics.q01
    return np.where(statistics.mask,
                    0.5 * (normalized + 1) * (action_high - action_low) + action_low,
                    normalized)


class ActionDetokenizer:
    """Token ids to one un-normalized action, for one `unnorm_key`; stateless after
    construction."""

    def __init__(self, statistics: ActionStatistics, *, vocab_size: int = OPENVLA_VOCAB_SIZE,
                 n_bins: int = N_BINS) -> None:
        if n_bins < 2 or vocab_size < n_bins:
            raise ActionTokenError(f"need 2 <= n_bins <= vocab_size, got {n_bins=}, "
                                   f"{vocab_size=}")
        self._statistics = statistics
        self._vocab_size = vocab_size
        self._n_bins = n_bins

    @classmethod
    def from_file(cls, path: str | Path, unnorm_key: str | None, *,
                  vocab_size: int = OPENVLA_VOCAB_SIZE, n_bins: int = N_BINS) -> ActionDetokenizer:
        """A detokenizer for `unnorm_key` of the `dataset_statistics.json` at `path`
        (raises as `load_action_statistics`)."""
        return cls(load_action_statistics(path, unnorm_key), vocab_size=vocab_size,
                   n_bins=n_bins)

    @property
    def statistics(self) -> ActionStatistics:
        """The statistics actions are un-normalized with."""
        return self._statistics

    @property
    def action_dim(self) -> int:
        """Token ids per action."""
        return self._statistics.action_dim

    def __call__(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The (action_dim,) float64 action for `token_ids`, as `predict_action` returns it.

        Raises:
            TokenCountMismatch, TokenOutOfRange: as `normalized_actions`.
        """
        normalized = normalized_actions(token_ids, action_dim=self.action_dim,
                                        vocab_size=self._vocab_size, n_bins=self._n_bins)
        return unnormalize(normalized, self._statistics)
