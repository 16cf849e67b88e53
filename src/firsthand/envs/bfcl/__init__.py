"""BFCL multi-turn function calling (package `bfcl_eval`); see `firsthand.envs.bfcl.env`."""

from firsthand.envs.bfcl.env import END_TURN, BfclEnv, entries

__all__ = ["END_TURN", "BfclEnv", "entries"]
