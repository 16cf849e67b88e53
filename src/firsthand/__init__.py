"""firsthand: train language agents from their own early experience.

The pipeline (each stage writes an artifact directory with a manifest.json):
collect expert trajectories -> branch alternatives at every expert state -> build IL/IWM/SR
datasets -> train -> evaluate -> report. The stage functions are exported here; they are imported
on first use, so `import firsthand` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from firsthand.contract import (
    METHODS,
    SPLITS,
    Branch,
    DependencyNotInstalled,
    Env,
    FirsthandError,
    InvalidInputError,
    NoExpertError,
    ReplayError,
    Step,
    StepResult,
    Trajectory,
    UnknownNameError,
)
from firsthand.registry import make, names, register

__version__ = "0.1.0"

_LAZY = {
    "collect": "firsthand.stages.collect",
    "branch": "firsthand.stages.branch",
    "BranchConfig": "firsthand.stages.branch",
    "build": "firsthand.stages.build",
    "BuildConfig": "firsthand.stages.build",
    "train": "firsthand.stages.train",
    "TrainConfig": "firsthand.stages.train",
    "evaluate": "firsthand.stages.evaluate",
    "make_agent": "firsthand.stages.evaluate",
    "rl": "firsthand.stages.rl",
    "RLConfig": "firsthand.stages.rl",
    "run": "firsthand.pipeline",
    "get_preset": "firsthand.settings",
    "Preset": "firsthand.settings",
    "Sweep": "firsthand.sweep",
    "write_html": "firsthand.report_html",
    "PromptConfig": "firsthand.prompts",
    "load_trajectories": "firsthand.artifacts",
    "load_branches": "firsthand.artifacts",
    "load_records": "firsthand.artifacts",
    "read_model_prompt": "firsthand.artifacts",
    "check_env": "firsthand.checks",
}


_MODULES = ("executors", "inference", "sweep")
"""Modules reached as attributes (`firsthand.sweep.sweep(...)`, `firsthand.executors.using("ray")`,
`firsthand.inference.open_backend(...)`)."""


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"firsthand.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'firsthand' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "SPLITS",
    "Branch",
    "DependencyNotInstalled",
    "Env",
    "FirsthandError",
    "InvalidInputError",
    "NoExpertError",
    "ReplayError",
    "Step",
    "StepResult",
    "Trajectory",
    "UnknownNameError",
    "__version__",
    "make",
    "names",
    "register",
    *_LAZY,
]
