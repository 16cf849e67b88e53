"""The built-in household environment (ALFWorld-style, pure Python)."""

from firsthand.envs.household.env import HouseholdEnv, plan
from firsthand.envs.household.world import TASK_TYPES, Task, generate

__all__ = ["HouseholdEnv", "TASK_TYPES", "Task", "generate", "plan"]
