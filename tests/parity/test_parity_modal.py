"""Uncertainty scores against modAL (modAL.uncertainty): least confidence, margin, entropy.

modAL scores the classifier's predict_proba; its private ``_proba_*`` functions are the same
formulas on given probabilities, so the tests feed both sides the same softmax rows.
"""

from __future__ import annotations

import numpy as np
import pytest

uncertainty = pytest.importorskip("modAL.uncertainty")

import ours  # noqa: E402

B = 40


def test_entropy_scores_equal_modal(probs):
    """Equal up to our clamp: the entropy selector takes log(max(p, 1e-12)), so an entry
    p < 1e-12 contributes p·log(1e-12) instead of p·log p, an error of p·log(1e-12/p) ≤ 1e-12/e
    per entry (the fixture has such entries; without the clamp a p = 0 entry would give nan)."""
    k = probs.shape[1]
    np.testing.assert_allclose(ours.entropy_scores(probs), uncertainty._proba_entropy(probs),
                               rtol=1e-12, atol=k * 1e-12 / np.e)


def test_least_confidence_scores_equal_modal(probs):
    # modAL's uncertainty is 1 − max p, ranked largest first; ours ranks max p smallest first
    np.testing.assert_allclose(1.0 - ours.max_prob_scores(probs),
                               uncertainty._proba_uncertainty(probs), rtol=0, atol=1e-15)


def test_selections_equal_modal_top_b(probs):
    """The b picks of each selector are modAL's b best (modAL returns them unordered, from
    argpartition); the fixture has no ties among the b-th best scores."""
    ent = uncertainty._proba_entropy(probs)
    unc = uncertainty._proba_uncertainty(probs)
    mar = uncertainty._proba_margin(probs)
    for score, largest in ((ent, True), (unc, True), (mar, False)):
        s = np.sort(score)
        assert s[-B] != s[-B - 1] if largest else s[B - 1] != s[B]
    assert set(ours.entropy_picks(probs, B)) == set(np.argsort(-ent)[:B])
    assert set(ours.least_confidence_picks(probs, B)) == set(np.argsort(-unc)[:B])
    assert set(ours.margin_picks(probs, B)) == set(np.argsort(mar)[:B])


def test_margin_picks_in_modal_margin_order(probs):
    """Our margin picks come in order of increasing modAL margin p_(1) − p_(2)."""
    picks = ours.margin_picks(probs, B)
    margin = uncertainty._proba_margin(probs)
    np.testing.assert_array_equal(picks, np.argsort(margin, kind="stable")[:B])
