"""BALD against scikit-activeml (skactiveml.pool.batch_bald), a second reference beside baal.

batch_bald's first row of utilities (before any point is in the batch) is BALD, the mutual
information of eq. 3 of Gal et al. 2017, from (T, N, K) MC samples as ours. It clips the
probabilities at ``eps`` (default 1e-7) before taking logs; the test sets eps = 1e-300 so that
only rounding separates the two. batch_bald clips its input in place, hence the copy.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skactiveml")
import ours  # noqa: E402
from skactiveml.pool import batch_bald  # noqa: E402


def test_bald_scores_equal_skactiveml_batch_bald_first_step(mc_probs):
    ref = batch_bald(mc_probs.copy(), batch_size=1, eps=1e-300)[0]
    np.testing.assert_allclose(ours.bald(mc_probs), np.maximum(ref, 0.0), rtol=1e-9, atol=1e-13)
    picks = ours.bald_picks(mc_probs, 25)
    np.testing.assert_array_equal(picks, np.argsort(-ref, kind="stable")[:25])
