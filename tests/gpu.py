"""One reusable capability marker for GPU tests: skipped elsewhere, with a reason naming what is missing.

    from gpu import needs_gpu

    @needs_gpu
    def test_something_on_the_gpu(): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from engines.tensorrt import unavailable_reason

F = TypeVar("F", bound=Callable[..., object])

GPU_MISSING = unavailable_reason()
GPU_SKIP_REASON = f"needs tensorrt and pycuda with a CUDA device: {GPU_MISSING}"

_skip_without_gpu = pytest.mark.skipif(GPU_MISSING is not None, reason=GPU_SKIP_REASON)


def needs_gpu(test: F) -> F:
    """Mark `test` as a GPU test (`-m gpu` selects them) and skip it where TensorRT cannot run."""
    return pytest.mark.gpu(_skip_without_gpu(test))
