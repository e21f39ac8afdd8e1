"""The learned downbeat phase (music/engines/downbeats.py): features in context, a model's phase choice,
and a model file made for other features refused."""

from __future__ import annotations

import numpy as np
import pytest

from music.engines.downbeats import (
    BASE_FEATURES,
    MODEL_PATH,
    OFFSETS,
    DownbeatModel,
    LinearModel,
    load_model,
    with_context,
    zscore,
)


def test_every_beat_sees_its_neighbours_and_the_ends_read_the_mean() -> None:
    base = np.arange(5, dtype=float)[:, None]  # one feature: the beat's index
    x = with_context(base, (-1, 0, 2))
    assert x[:, 1].tolist() == [0, 1, 2, 3, 4]
    assert x[:, 0].tolist() == [0, 0, 1, 2, 3]  # the beat before (none for the first: 0)
    assert x[:, 2].tolist() == [2, 3, 4, 0, 0]  # two beats after


def test_indicators_are_not_z_scored() -> None:
    base = np.random.default_rng(0).normal(5.0, 2.0, size=(12, len(BASE_FEATURES)))
    base[:, BASE_FEATURES.index("first")] = 0.0
    base[3, BASE_FEATURES.index("first")] = 1.0
    z = zscore(base)
    assert z[:, BASE_FEATURES.index("first")].tolist() == base[:, BASE_FEATURES.index("first")].tolist()
    assert abs(z[:, 0].mean()) < 1e-9


def _model_preferring_low_onsets() -> DownbeatModel:
    n = len(BASE_FEATURES) * len(OFFSETS)
    coef = np.zeros(n)
    coef[OFFSETS.index(0) * len(BASE_FEATURES) + BASE_FEATURES.index("onset0")] = 1.0
    return DownbeatModel({4: LinearModel(np.zeros(n), np.ones(n), coef, 0.0)}, {"real_songs": []})


def test_the_phase_with_the_likeliest_downbeats_wins() -> None:
    base = np.random.default_rng(1).normal(size=(32, len(BASE_FEATURES)))
    base[1::4, BASE_FEATURES.index("onset0")] += 3.0  # the kick lands on beats 1, 5, 9, ...
    model = _model_preferring_low_onsets()
    scores = model.phase_scores(base, 4)
    assert scores is not None and int(np.argmax(scores)) == 1
    assert model.phase_scores(base, 3) is None  # no model for 3/4: the tracker's rule decides


def test_a_model_file_for_other_features_is_refused() -> None:
    doc = _model_preferring_low_onsets().to_json()
    assert DownbeatModel.from_json(doc).models[4].coef.tolist() == _model_preferring_low_onsets().models[4].coef.tolist()
    doc["base_features"] = doc["base_features"][:-1]
    with pytest.raises(ValueError, match="other features"):
        DownbeatModel.from_json(doc)


@pytest.mark.skipif(not MODEL_PATH.is_file(), reason="no downbeat model in the package")
def test_the_shipped_model_has_both_meters_and_says_what_it_learned_from() -> None:
    model = load_model(MODEL_PATH)
    assert model is not None and set(model.models) == {3, 4}
    assert model.trained_on["real_songs"] and model.trained_on["renders"] > 0
