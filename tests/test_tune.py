"""The validation-split study (asknlearn.tune) on digits: its tables are self-consistent."""

from __future__ import annotations

import math

import pytest

from asknlearn import tune


@pytest.fixture(scope="module")
def tables():
    return tune.study("digits", None, labels=[120], seeds=[0], val_size=300, log=lambda *_: None)


def test_dropout_table_covers_every_rate_and_scores_on_the_split(tables):
    drop, _ = tables
    assert sorted(drop.loc[drop.loss == "vwcc", "dropout"]) == sorted(tune.DROPOUT_RATES)
    assert drop.val_accuracy.between(0, 1).all() and (drop.epochs >= 1).all()
    # α is defined only on the stochastic network
    assert drop.loc[drop.dropout == 0.0, "alpha_mean"].isna().all()
    assert (drop.loc[drop.loss == "vwcc", "alpha_mean"] >= 0).all()


def test_refinement_net_gain_is_the_refined_subset_change(tables):
    """Only refined points change label, so the split-wide gain is fraction × subset change."""
    _, ref = tables
    assert {"epochs", "train_augment", "tau", "k", "shift"} <= set(ref.columns)
    for r in ref.itertuples():
        if r.refined_fraction == 0:
            assert r.net_gain == 0 and math.isnan(r.refined_accuracy)
        else:
            expect = r.refined_fraction * (r.refined_accuracy - r.refined_argmax_accuracy)
            assert r.net_gain == pytest.approx(expect, abs=1e-9)
    # a lower τ can only shrink the low-confidence subset
    g = ref.groupby(["loss", "train_augment", "shift", "include_original", "k"])
    for _, grp in g:
        fr = grp.sort_values("tau").refined_fraction.to_numpy()
        assert (fr[1:] >= fr[:-1]).all()
