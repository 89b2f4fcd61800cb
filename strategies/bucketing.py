"""Bucketing (Karimireddy, He, Jaggi, ICLR 2022).

Paper: "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing".

A pre-aggregation: the ``n`` updates are shuffled by a random permutation ``pi`` and
split into buckets of ``s`` consecutive ones, each replaced by its mean:

    y_k = (1 / |B_k|) * sum_{i in B_k} d_pi(i),   B_k = {(k-1)s + 1, ..., min(ks, n)}

giving ``ceil(n / s)`` rows (the last bucket may be smaller, as in ByzFL). The
permutation comes from the ``rng`` passed in; the Flower strategy seeds it with the
run's seed and the round, so a rerun or a resumed run buckets alike. Output row ``k``
stands for the clients of bucket ``k``. The rule after it sees ``ceil(n / s)`` rows and
checks its own size rule on that number.
"""

from __future__ import annotations

import math

import numpy as np

from strategies.chunked import weighted_row_sum
from strategies.contract import Preaggregation, PreaggregationResult
from strategies.params import Param, at_least

SIZE = Param("size", 2, "updates averaged per bucket s", at_least(1), label="bucket size s")
PARAMS = (SIZE,)


def buckets(num_clients: int, size: int, rng: np.random.Generator) -> list[list[int]]:
    """The rows of each bucket: a random permutation cut into pieces of ``size``.

    >>> buckets(5, 2, np.random.default_rng(0))
    [[2, 4], [3, 0], [1]]
    """
    order = [int(i) for i in rng.permutation(num_clients)]
    return [order[start:start + size] for start in range(0, num_clients, size)]


def bucket_means(updates: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """The mean of every group of rows, in the input's float dtype."""
    out = np.empty((len(groups), updates.shape[1]), dtype=updates.dtype)
    for k, members in enumerate(groups):
        coefficients = np.zeros(updates.shape[0])
        coefficients[members] = 1.0 / len(members)
        out[k] = weighted_row_sum(updates, coefficients)
    return out


def check_size(num_clients: int, num_byzantine: int, size: int = SIZE.default) -> None:
    """Any ``n >= 1`` (``size >= 1`` is the parameter's own rule)."""


def output_size(num_clients: int, num_byzantine: int, size: int = SIZE.default) -> int:
    """``ceil(n / s)`` buckets."""
    return math.ceil(num_clients / size)


def preaggregate(updates: np.ndarray, *, num_byzantine: int, rng: np.random.Generator,
                 size: int = SIZE.default) -> PreaggregationResult:
    """The registry's adapter: the bucket means and each bucket's rows."""
    groups = buckets(updates.shape[0], size, rng)
    return PreaggregationResult(bucket_means(updates, groups), [sorted(g) for g in groups])


PREAGGREGATION = Preaggregation("bucketing", preaggregate, check_size, output_size, PARAMS,
                                description="means of random buckets of s updates "
                                            "(Karimireddy et al. 2022)")
