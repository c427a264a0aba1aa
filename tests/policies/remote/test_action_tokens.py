"""OpenVLA action de-tokenization (`policies.remote.action_tokens`) against hand-computed
values, a restatement of openvla's own code, its bounds and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.remote.action_tokens import (
    LIBERO_SPATIAL_STATISTICS,
    ActionDetokenizer,
    DatasetStatisticsError,
    TokenCountMismatch,
    TokenOutOfRange,
    UnknownUnnormKey,
    action_statistics,
    action_token_range,
    bin_centers,
    load_action_statistics,
    normalized_actions,
)

LOWEST, HIGHEST = 31744, 31999  # the action-token ids; 31744 is the *highest* bin

# libero_spatial's q01/q99 as printed in openvla-7b-finetuned-libero-spatial's
# dataset_statistics.json (the bundled file must hold exactly these).
Q01 = [-0.7454732114076613, -0.6616071462631226, -0.9375, -0.1071428582072258,
       -0.20678570866584778, -0.1842857152223587, 0.0]
Q99 = [0.9375, 0.8758928775787354, 0.9321428537368774, 0.1039285734295845,
       0.17678570747375488, 0.14571428298950195, 1.0]


@pytest.fixture(scope="module")
def libero_spatial() -> ActionDetokenizer:
    return ActionDetokenizer.from_file(LIBERO_SPATIAL_STATISTICS, "libero_spatial")


def centre(k: int) -> float:
    """Bin k's centre by hand: the midpoint of -1 + 2k/255 and -1 + 2(k+1)/255."""
    return -1.0 + (2 * k + 1) / 255


def openvla_predict_action_decode(token_ids, q01, q99, mask):
    """openvla `modeling_prismatic.py` `predict_action`, lines 500-534, restated verbatim
    (vocab_size = 32064 - 64)."""
    bins = np.linspace(-1, 1, 256)
    bin_centers_ = (bins[:-1] + bins[1:]) / 2.0
    discretized_actions = 32000 - np.asarray(token_ids)
    discretized_actions = np.clip(discretized_actions - 1, a_min=0,
                                  a_max=bin_centers_.shape[0] - 1)
    normalized = bin_centers_[discretized_actions]
    action_high, action_low = np.array(q99), np.array(q01)
    return np.where(mask, 0.5 * (normalized + 1) * (action_high - action_low) + action_low,
                    normalized)


def test_action_tokens_are_the_last_256_ids_below_32000():
    assert action_token_range() == range(LOWEST, HIGHEST + 1)
    assert len(action_token_range()) == 256


def test_bin_centres_are_255_midpoints_of_linspace():
    centres = bin_centers()
    assert centres.shape == (255,)
    assert centres[0] == pytest.approx(-254 / 255, abs=1e-15)
    assert centres[127] == pytest.approx(0.0, abs=1e-15)
    assert centres[254] == pytest.approx(254 / 255, abs=1e-15)


@pytest.mark.parametrize(("token", "expected"), [
    (HIGHEST, centre(0)),        # the highest id is the lowest bin: -254/255
    (HIGHEST - 1, centre(1)),    # one id down, one bin up
    (31872, 0.0),                # bin 127, the middle of [-1, 1]
    (LOWEST + 1, centre(254)),   # the last bin, +254/255
    (LOWEST, centre(254)),       # digitize's index 256 folds into the last bin too
])
def test_token_maps_to_the_hand_computed_bin_centre(token, expected):
    normalized = normalized_actions([token], action_dim=1)
    assert normalized[0] == pytest.approx(expected, abs=1e-15)


def test_libero_spatial_action_matches_hand_computed_values(libero_spatial):
    # axis: token -> normalized x -> q01 + (x + 1) / 2 * (q99 - q01); axis 6 (gripper) has
    # mask false, so it stays x.
    tokens = [HIGHEST, LOWEST, 31872, 31872, 31800, 31900, LOWEST]
    expected = [-0.7421732639343129,   # x = -254/255
                0.8728781716496337,    # x = +254/255
                -0.0026785731315612793,  # x = 0: (q01 + q99) / 2
                -0.0016071423888206482,
                0.09330251690219431,   # x = 144/255
                -0.055521010037730724,  # x = -56/255
                254 / 255]             # gripper, not un-normalized
    assert libero_spatial(tokens) == pytest.approx(expected, abs=1e-12)


def test_decode_is_bit_identical_to_openvla_predict_action(libero_spatial):
    rng = np.random.default_rng(0)
    stats = libero_spatial.statistics
    for _ in range(50):
        tokens = rng.integers(LOWEST, HIGHEST + 1, size=7)
        ours = libero_spatial(tokens)
        theirs = openvla_predict_action_decode(tokens, stats.q01.tolist(), stats.q99.tolist(),
                                               stats.mask)
        assert np.array_equal(ours, theirs), tokens


def test_tokenizer_then_decoder_returns_the_action_within_half_a_bin():
    # ActionTokenizer.__call__: vocab_size - digitize(clip(a, -1, 1), bins)
    actions = np.linspace(-1, 1, 41)
    tokens = 32000 - np.digitize(np.clip(actions, -1, 1), np.linspace(-1, 1, 256))
    decoded = np.array([normalized_actions([t], action_dim=1)[0] for t in tokens])
    assert np.all(np.abs(decoded - actions) <= 1 / 255 + 1e-12)


def test_sglang_doc_formula_mirrors_openvla():
    # The SGLang doc's (tok - 31744) / 255 * 2 - 1 against the real decoder.
    def doc(tok):
        return (tok - 31744) / 255.0 * 2 - 1

    for tok in range(LOWEST + 1, HIGHEST + 1):
        real = normalized_actions([tok], action_dim=1)[0]
        assert doc(tok) == pytest.approx(1 / 255 - real, abs=1e-12), tok
    assert doc(LOWEST) == -1.0
    assert normalized_actions([LOWEST], action_dim=1)[0] == pytest.approx(254 / 255)
    assert abs(doc(HIGHEST) - normalized_actions([HIGHEST], action_dim=1)[0]) == pytest.approx(
        509 / 255)


@pytest.mark.parametrize("token", [LOWEST - 1, HIGHEST + 1, 2, 0, -1, 32063])
def test_token_outside_the_action_range_is_refused(libero_spatial, token):
    tokens = [31872] * 7
    tokens[3] = token
    with pytest.raises(TokenOutOfRange, match=rf"\(3, {token}\)"):
        libero_spatial(tokens)


@pytest.mark.parametrize("tokens", [[31872.0] * 7, [True] * 7])
def test_non_integer_token_ids_are_refused(libero_spatial, tokens):
    with pytest.raises(TokenOutOfRange, match="integers"):
        libero_spatial(tokens)


@pytest.mark.parametrize("tokens", [[31872] * 6, [31872] * 8, [], [[31872] * 7]])
def test_token_count_other_than_action_dim_is_refused(libero_spatial, tokens):
    with pytest.raises(TokenCountMismatch, match="expected 7 action token ids"):
        libero_spatial(tokens)


def test_bundled_statistics_are_the_published_libero_spatial_numbers():
    stats = load_action_statistics(LIBERO_SPATIAL_STATISTICS, "libero_spatial")
    assert stats.q01.tolist() == Q01
    assert stats.q99.tolist() == Q99
    assert stats.mask.tolist() == [True] * 6 + [False]
    assert stats.action_dim == 7


def test_unknown_unnorm_key_names_the_known_ones():
    with pytest.raises(UnknownUnnormKey,
                       match=r"'libero_object'.*known keys: \['libero_spatial'\]"):
        load_action_statistics(LIBERO_SPATIAL_STATISTICS, "libero_object")


def test_no_unnorm_key_takes_the_only_dataset():
    assert load_action_statistics(LIBERO_SPATIAL_STATISTICS, None).unnorm_key == "libero_spatial"


def test_no_unnorm_key_with_several_datasets_names_them():
    entry = {"action": {"q01": [0.0], "q99": [1.0]}}
    with pytest.raises(UnknownUnnormKey, match=r"\['a', 'b'\]"):
        action_statistics({"b": entry, "a": entry}, None)


def test_absent_mask_unnormalizes_every_axis():
    stats = action_statistics({"k": {"action": {"q01": [0.0, 10.0], "q99": [2.0, 20.0]}}}, "k")
    detokenize = ActionDetokenizer(stats)
    # x = +254/255 on both axes: q01 + (509/510) (q99 - q01)
    assert detokenize([LOWEST, LOWEST]) == pytest.approx([2 * 509 / 510, 10 + 10 * 509 / 510],
                                                          abs=1e-12)


@pytest.mark.parametrize(("action", "match"), [
    ({"q01": [0.0, 0.0]}, r"q99 must be a non-empty list"),           # q99 missing
    ({"q01": [0.0, 0.0], "q99": [1.0]}, "lengths 2, 1, 2"),            # lengths differ
    ({"q01": [0.0], "q99": [1.0], "mask": [1]}, "list of booleans"),  # 1 is not a bool
    ({"q01": [float("nan")], "q99": [1.0]}, "non-finite"),
    ({"q01": [1.0], "q99": [0.0]}, r"q99 < q01 on axes \[0\]"),
])
def test_malformed_statistics_are_refused(action, match):
    with pytest.raises(DatasetStatisticsError, match=match):
        action_statistics({"k": {"action": action}}, "k")


def test_statistics_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "dataset_statistics.json"
    path.write_text("{not json")
    with pytest.raises(DatasetStatisticsError, match="cannot read"):
        load_action_statistics(path, "k")
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(DatasetStatisticsError, match="JSON object"):
        load_action_statistics(path, "k")
