"""firsthand: train language agents from their own early experience.

The pipeline (each stage writes an artifact directory with a manifest.json):
collect expert trajectories -> branch alternatives at every expert state -> build IL/IWM/SR
datasets -> train -> evaluate -> report.
"""

from firsthand.contract import (
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

__all__ = [
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
]
