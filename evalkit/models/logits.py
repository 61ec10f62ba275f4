"""The output head both models share: hidden states -> float32 logits over the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this many rows (decode steps, last-position prefill) the fp32 CPU head takes the faster route.
FEW_ROWS = 16


def vocab_logits(hidden: Tensor, weight: Tensor) -> Tensor:
    """hidden (..., d) @ weight (vocab, d).T -> float32 logits (..., vocab).

    A decode step's head streams the whole (vocab x d) matrix for a few rows: at d_model 256 and 32768
    tokens it is most of the step. In fp32 on the CPU, MKL streams it about 2x faster computed as
    weight @ hidden.T with at least two rows than as F.linear. Measured, 32768 x 256, one thread, ms:

        rows          1     2     4     8    16    32
        F.linear    2.6   4.4   3.9   4.4   6.4  10.1
        this way    1.4   1.4   1.6   3.1   6.6   9.4

    bf16 runs through oneDNN, where F.linear is the faster (1.3 ms at one row, against 2.5), and a GPU
    has no such gap: both keep F.linear. Each row's logits are the same either way up to rounding.
    """
    rows = hidden.reshape(-1, hidden.shape[-1])
    n = rows.shape[0]
    if hidden.device.type != "cpu" or weight.dtype != torch.float32 or n >= FEW_ROWS:
        return F.linear(hidden, weight).float()
    if n == 1:
        rows = F.pad(rows, (0, 0, 0, 1))  # MKL's one-column kernel is the slow one: add a zero row
    logits = (weight @ rows.t()).t()[:n].contiguous()
    return logits.view(*hidden.shape[:-1], weight.shape[0])
