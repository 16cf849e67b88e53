"""Inference: everything that makes a model act or write. `agents` (random, generating and scoring agents,
each reply with its token ids), `backends` (one `generate` for Hugging Face, vLLM and OpenAI-compatible
servers), `episodes` (episodes stepped in batches, one agent call per step for all of them) and `customer`
(a model that plays tau-retail's customer)."""

from firsthand.inference.agents import (
    DECISIONS,
    Agent,
    AgentInput,
    Generation,
    ModelAgent,
    Prompt,
    RandomAgent,
    ScoringAgent,
)
from firsthand.inference.backends import BACKENDS, Backend, BackendAgent, Sampling, open_backend
from firsthand.inference.episodes import EpisodeResult, run_episodes

__all__ = [
    "BACKENDS",
    "DECISIONS",
    "Agent",
    "AgentInput",
    "Backend",
    "BackendAgent",
    "EpisodeResult",
    "Generation",
    "ModelAgent",
    "Prompt",
    "RandomAgent",
    "Sampling",
    "ScoringAgent",
    "open_backend",
    "run_episodes",
]
