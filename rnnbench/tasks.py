"""Long-range tasks for training an RNN, generated on the fly from a seed (the `training` metric).

adding (Hochreiter & Schmidhuber 1997, experiment 4; Le et al. 2015): input [T, B, 2]. Channel 0
holds values drawn uniformly from [0, 1); channel 1 marks two steps with a 1, one drawn uniformly
from the first half [0, T // 2) and one from the second [T // 2, T). The target is the sum of the
two marked values, read from the last step's output; loss: mean squared error. Predicting the
mean, 1, scores Var(u1 + u2) = 1/6: the chance level. A prediction is right when it is within
`tolerance` of the target (0.04 in Hochreiter & Schmidhuber).

copy (Hochreiter & Schmidhuber 1997, experiment 2; Arjovsky et al. 2016): input [T, B, K + 2],
one-hot over K symbols, a blank (channel K) and a recall marker (channel K + 1). Steps 0..S-1 hold
S symbols drawn uniformly from the K, step T-S-1 holds the marker, every other step a blank; the
network must output the S symbols in order over the last S steps (T-S..T-1), so the delay between
seeing a symbol and recalling it is T - S steps. Loss: cross-entropy over those S steps; accuracy:
the fraction of the symbols recalled right. Chance: log K and 1/K.

A batch is drawn on the CPU from its own generator (the same numbers for every backend and device)
and then moved to the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TASK_NAMES = ("adding", "copy")


@dataclass(frozen=True)
class Batch:
    """x: the input [T, B, input_size]; target: [B] sums (adding) or [S, B] symbol ids (copy)."""
    x: torch.Tensor
    target: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(self.x.to(device), self.target.to(device))


@dataclass(frozen=True)
class Adding:
    tolerance: float = 0.04
    input_size = 2
    output_size = 1
    chance_loss = 1 / 6  # the MSE of always predicting 1
    loss_name = "MSE"

    def min_seq_len(self) -> int:
        return 2  # a marker in each half

    def batch(self, seq_len: int, batch: int, gen: torch.Generator) -> Batch:
        values = torch.rand(seq_len, batch, generator=gen)
        half = seq_len // 2
        first = torch.randint(0, half, (batch,), generator=gen)
        second = torch.randint(half, seq_len, (batch,), generator=gen)
        markers = torch.zeros(seq_len, batch)
        rows = torch.arange(batch)
        markers[first, rows] = 1.0
        markers[second, rows] = 1.0
        return Batch(torch.stack([values, markers], dim=-1), values[first, rows] + values[second, rows])

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """The states the head reads: the last step's [B, H]."""
        return hidden[-1]

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction = at_least_fp32(prediction.squeeze(-1))
        return F.mse_loss(prediction, target.to(prediction.dtype))

    def accuracy(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        return ((at_least_fp32(prediction.squeeze(-1)) - target).abs() < self.tolerance).float().mean().item()


@dataclass(frozen=True)
class Copy:
    length: int = 10    # S: symbols to recall
    alphabet: int = 8   # K
    loss_name = "cross-entropy"

    @property
    def input_size(self) -> int:
        return self.alphabet + 2  # the symbols, blank, recall marker

    @property
    def output_size(self) -> int:
        return self.alphabet

    @property
    def chance_loss(self) -> float:
        return math.log(self.alphabet)

    def min_seq_len(self) -> int:
        return 2 * self.length + 1  # the symbols, the marker, the recall window

    def batch(self, seq_len: int, batch: int, gen: torch.Generator) -> Batch:
        S, K = self.length, self.alphabet
        symbols = torch.randint(0, K, (S, batch), generator=gen)
        ids = torch.full((seq_len, batch), K)  # blank
        ids[:S] = symbols
        ids[seq_len - S - 1] = K + 1  # recall marker
        return Batch(F.one_hot(ids, K + 2).float(), symbols)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """The states the head reads: the recall window's [S, B, H]."""
        return hidden[-self.length:]

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(at_least_fp32(prediction.flatten(0, 1)), target.flatten())

    def accuracy(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        return (prediction.argmax(-1) == target).float().mean().item()


Task = Adding | Copy


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """The loss is taken in float32 (float64 stays): a 16-bit prediction under autocast is upcast."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def make_task(name: str, settings) -> Task:
    """The task `name` with its parameters from settings (a schema.Training: copy_length,
    copy_alphabet, adding_tolerance)."""
    if name == "adding":
        return Adding(settings.adding_tolerance)
    return Copy(settings.copy_length, settings.copy_alphabet)
