"""How the engine holds a distribution over a vocabulary: a dense NumPy vector, or a sparse one.

The guide's distribution on the base vocabulary has at most one entry per guide token (49k of
262k for the default pair), so the bridge hands it over sparse and the blending math works on
it without ever building the dense 262k vector. Both the bridge and the blending math depend on
this module, and neither on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # numpy.typing is newer than the oldest NumPy this package runs on
    from typing import TypeAlias

    from numpy.typing import NDArray

    FloatArray: TypeAlias = NDArray[np.floating[Any]]  # probabilities or logits
    IdArray: TypeAlias = NDArray[np.integer[Any]]  # token ids


@dataclass(frozen=True)
class SparseDistribution:
    """A non-negative vector of `size` entries that is exactly 0 outside `index`.

    Every blending function gives on it, bit for bit, what it gives on `dense()`.
    """

    index: IdArray  # sorted, unique token ids
    values: FloatArray  # float64, aligned with index
    size: int

    def dense(self) -> FloatArray:
        out = np.zeros(self.size)
        out[self.index] = self.values
        return out

    @cached_property
    def top(self) -> tuple[float, int]:
        """(max, argmax) of the dense vector, the first index on ties (NaN first, as NumPy).
        Cached: auto alpha and the trace's rank both ask at every intervention."""
        if len(self.values):
            i = int(self.values.argmax())
            value = float(self.values[i])
            if value > 0.0 or value != value:
                return value, int(self.index[i])
        dense = self.dense()  # all zero (or negative): let NumPy decide, as on the dense vector
        i = int(dense.argmax())
        return float(dense[i]), i


if TYPE_CHECKING:
    # A distribution as the blending math takes it: dense, or sparse where it has few entries.
    Distribution: TypeAlias = FloatArray | SparseDistribution
