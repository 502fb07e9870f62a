"""The embedded model for a test module's fixture."""
from __future__ import annotations

from unsloth_min.engine import embedded_model_path
from unsloth_min.engine.model import Model, ModelParams


def embedded(n_ctx: int, n_parallel: int, n_batch: int):
    """A fixture body: yields the loaded model, closes it after the module's tests."""
    m = Model(ModelParams(embedded_model_path(), n_ctx=n_ctx, n_parallel=n_parallel, n_batch=n_batch))
    yield m
    m.close()
