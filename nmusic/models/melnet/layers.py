"""One MelNet layer: time-delayed, frequency-delayed and (optional) centralized stacks (paper 3.1.1).

Notation of the paper (Vasquez & Lewis 2019, eqs. 6-12), with ``x`` a tier laid out ``(B, T, F)``
(time-major) and hidden states ``(B, T, F, D)``:

    time-delayed      h^t[l] = h^t[l-1] + W^t_l [ RNN_time→(h^t[l-1]) ; RNN_freq↔(h^t[l-1]) ]
    centralized       h^c[l] = h^c[l-1] + W^c_l RNN_time→(h^c[l-1])                (B, T, D)
    frequency-delayed h^f[l] = h^f[l-1] + W^f_l RNN_freq→(h^f[l-1] + h^t[l] + h^c[l])

``RNN_time→`` runs forward along time for every frequency bin, ``RNN_freq↔`` runs both ways along
frequency within each frame and ``RNN_freq→`` runs forward along frequency within each frame. The
tier (``tiers.Tier``) feeds ``h^t[0]`` from ``x[i-1, j]``, ``h^c[0]`` from the whole frame
``x[i-1]`` and ``h^f[0]`` from ``x[i, j-1]``, so the output at ``(i, j)`` only sees earlier elements.

Every RNN is a cuDNN/fused ``nn.LSTM``/``nn.GRU`` applied to a reshaped batch (all bins or all
frames at once): no Python loop over time or frequency during training. For cached sampling the
same modules run one frame at a time with carried state (:meth:`DelayedLayer.time_stack` on
``T = 1``), and the frequency-delayed stack one bin at a time with the same weights through
``torch.lstm_cell`` / ``torch.gru_cell`` (``sampling.FrequencySteps``); both give the numbers
of the full pass.

Mixed precision: on CUDA, autocast runs cuDNN RNNs in float16 whatever dtype was asked for, so
under bfloat16 autocast (which has no grad scaler) the RNNs would train in unscaled fp16. They run
outside autocast in float32 then (:func:`call_rnn`); under fp16 autocast they stay in fp16, where
the trainer's grad scaler protects them.
"""
from __future__ import annotations

import torch
from torch import nn

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU}


def make_rnn(kind: str, dim_in: int, dim: int, bidirectional: bool = False) -> nn.RNNBase:
    """A one-layer, batch-first ``nn.LSTM`` or ``nn.GRU``."""
    return RNN_TYPES[kind](dim_in, dim, batch_first=True, bidirectional=bidirectional)


def call_rnn(rnn: nn.RNNBase, x: torch.Tensor, state=None):
    """``rnn(x, state)``, in float32 outside autocast when autocast asks for anything but fp16 (bf16 RNNs lose
    precision over long sequences, and on a CPU without AVX-512 oneDNN has no bf16 LSTM at all)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) != torch.float16:
        with torch.autocast(dev, enabled=False):
            if state is not None:
                state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
            return rnn(x.float(), state)
    return rnn(x, state)


def run_time(rnn: nn.RNNBase, h: torch.Tensor, state=None):
    """Run ``rnn`` along time for every bin: ``(B, T, F, D) -> (B, T, F, D')`` plus final state.

    ``state`` (and the returned state) covers the ``B * F`` sequences, so sampling can carry it
    from one frame to the next.
    """
    B, T, F, D = h.shape
    seq = h.permute(0, 2, 1, 3).reshape(B * F, T, D)
    out, state = call_rnn(rnn, seq, state)
    return out.reshape(B, F, T, -1).permute(0, 2, 1, 3), state


def run_freq(rnn: nn.RNNBase, h: torch.Tensor, state=None):
    """Run ``rnn`` along frequency within every frame: ``(B, T, F, D) -> (B, T, F, D')`` plus state."""
    B, T, F, D = h.shape
    out, state = call_rnn(rnn, h.reshape(B * T, F, D), state)
    return out.reshape(B, T, F, -1), state


class DelayedLayer(nn.Module):
    """Layer ``l`` of all stacks of a tier (width ``dim``; ``rnn`` is ``"lstm"`` or ``"gru"``)."""

    def __init__(self, dim: int, rnn: str = "lstm", central: bool = False):
        super().__init__()
        self.time_rnn = make_rnn(rnn, dim, dim)                           # forward in time
        self.time_freq_rnn = make_rnn(rnn, dim, dim, bidirectional=True)  # both ways in frequency
        self.W_t = nn.Linear(3 * dim, dim)
        self.freq_rnn = make_rnn(rnn, dim, dim)                           # forward in frequency
        self.W_f = nn.Linear(dim, dim)
        self.central = central
        if central:
            self.central_rnn = make_rnn(rnn, dim, dim)
            self.W_c = nn.Linear(dim, dim)

    # --- pieces (used by both the full pass and cached sampling) ---------------------------------
    def time_stack(self, h_t: torch.Tensor, state=None):
        """``h^t[l-1] (B, T, F, D) -> h^t[l]``; ``state`` is the time RNN's carried state."""
        along_time, state = run_time(self.time_rnn, h_t, state)
        along_freq, _ = run_freq(self.time_freq_rnn, h_t)
        return h_t + self.W_t(torch.cat([along_time, along_freq], dim=-1)), state

    def central_stack(self, h_c: torch.Tensor, state=None):
        """``h^c[l-1] (B, T, D) -> h^c[l]``."""
        out, state = call_rnn(self.central_rnn, h_c, state)
        return h_c + self.W_c(out), state

    def freq_stack(self, h_f, h_t, h_c=None, state=None):
        """``h^f[l-1], h^t[l] (B, T, F, D), h^c[l] (B, T, D) -> h^f[l]``."""
        u = h_f + h_t
        if h_c is not None:
            u = u + h_c.unsqueeze(2)
        out, state = run_freq(self.freq_rnn, u, state)
        return h_f + self.W_f(out), state

    # --- full (training) pass -------------------------------------------------------------------
    def forward(self, h_t: torch.Tensor, h_f: torch.Tensor, h_c: torch.Tensor | None = None):
        """All stacks over a whole tier: ``(B, T, F, D), (B, T, F, D), (B, T, D) | None``."""
        h_t, _ = self.time_stack(h_t)
        if self.central:
            h_c, _ = self.central_stack(h_c)
        h_f, _ = self.freq_stack(h_f, h_t, h_c if self.central else None)
        return h_t, h_f, h_c
