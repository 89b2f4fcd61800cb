"""The server's optimiser: server learning rate and momentum (FedAvgM).

Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", 2019 (FedAvgM); Reddi et al., "Adaptive Federated
Optimization", ICLR 2021 (the server learning rate).

With ``a_t`` the round's aggregate update (of any rule), the global model moves by

    m_t = beta * m_{t-1} + a_t,    w_{t+1} = w_t + eta * m_t,    m_0 = 0

(``eta`` = ``server-learning-rate``, ``beta`` = ``server-momentum``), the update-space
form of Flower's ``FedAvgM`` (which writes the pseudo-gradient ``-a_t``). With
``eta = 1, beta = 0`` the step is ``a_t`` itself, bit for bit. The buffer ``m`` is
state, kept by the strategy and saved in the checkpoint.
"""

from __future__ import annotations

import numpy as np


def server_step(aggregate: np.ndarray, buffer: np.ndarray | None, learning_rate: float,
                momentum: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the step to add to the global model and the new momentum buffer.

    >>> step, m = server_step(np.array([1.0]), None, 0.5, 0.9)
    >>> step, m
    (array([0.5]), array([1.]))
    >>> server_step(np.array([1.0]), m, 0.5, 0.9)[0]
    array([0.95])
    """
    if momentum == 0.0:
        return (aggregate if learning_rate == 1.0 else learning_rate * aggregate), None
    new_buffer = aggregate.copy() if buffer is None else momentum * buffer + aggregate
    return learning_rate * new_buffer, new_buffer
