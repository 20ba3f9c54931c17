"""FLOPs of a call, counted, never estimated: the cost axis of the benchmarks and the studies.

`count_flops(fn)` runs `fn()` once under `torch.utils.flop_counter.FlopCounterMode` and returns
the FLOPs (2 per multiply-add) of its matmuls, convolutions and attention. FlopCounterMode knows
the CUDA SDPA kernels but not the CPU flash-attention kernel; that one is counted the same way.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["count_flops"]

_aten = torch.ops.aten
_CPU_SDPA_FLOPS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)
    ),
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls, convolutions and attention that `fn()` runs.

    Elementwise ops, normalisations and the optimizer are not counted (the usual MFU convention).
    """
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()
