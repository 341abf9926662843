"""dfer: audio-visual dynamic facial expression recognition with MMA-DFER.

    import dfer_cli as dfer
    model = dfer.load_model()                  # the default weights entry; see `dfer weights`
    records = model.predict("interview.mp4")   # one record per file, as `dfer predict --json` prints
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Where each public name lives; imported on first use, so that `dfer --help` starts without torch.
_EXPORTS = {
    "load_model": "api", "Model": "api", "PredictConfig": "predict.config", "to_dataframe": "results.records",
    "FileResult": "results.records", "ClipResult": "results.records",
    "predict_on_ray": "cluster.job", "RayConfig": "cluster.config", "RaySummary": "cluster.job",
    "train_run": "train.job", "TrainJob": "train.job", "RunConfig": "train.loop", "TrainRecipe": "train.loop",
    "evaluate_run": "train.evaluate", "EvalConfig": "train.evaluate",
    "write_report": "report.writer", "write_annotated": "report.annotate",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dfer_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
