"""Helpers the example strategies share (a file starting with '_' is a helper, never a strategy of its own).

Editing this file changes the code hash of every strategy that imports it, so their old results are not reused.
"""

import numpy as np


def hold(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """1.0 from each bar where ``enter`` holds until the next bar where ``leave`` holds, else 0.0 (leave wins a tie).

    Causal: the value at bar t depends on ``enter`` and ``leave`` at bars <= t only.
    """
    n = len(enter)
    state = np.full(n, -1.0)  # -1: no event at this bar
    state[enter] = 1.0
    state[leave] = 0.0
    last = np.where(state >= 0, np.arange(n), -1)
    np.maximum.accumulate(last, out=last)  # the latest bar <= t with an event
    return np.where(last >= 0, state[np.maximum(last, 0)], 0.0)
