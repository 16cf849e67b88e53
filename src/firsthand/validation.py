"""Validation during training: how a checkpoint is measured on tasks no comparison reports.

Budgets only mean something at a converged IL (METHOD.md, section 3): IL trains until validation stops
improving, its best step count becomes every method's budget, and each method is reported at the checkpoint
its own validation picks. A `Validator` measures a model in training on the validation tasks (training tasks
after the demonstrations, so disjoint from them and from both test splits):

- ``accuracy``: teacher-forced, the expert's action at each expert state of the validation tasks (cheap);
- ``success``: won episodes of the policy, greedy, from each validation task's start;
- ``selection``: success plus a hundredth of accuracy, the one number a checkpoint is chosen by (success
  decides; accuracy breaks its ties, which a few episodes make frequent).

The train stage hands it to the Trainer as its evaluation (`stages.train`), so Hugging Face's own best-
checkpoint tracking and early stopping choose the step, and an interrupted run resumes with both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from firsthand.contract import normalize
from firsthand.episodes import run_episodes
from firsthand.inference import AgentInput, ModelAgent
from firsthand.prompts import PromptConfig, parse_action


@dataclass(frozen=True)
class Validator:
    """The validation a training stage is measured by (its settings are part of the stage's configuration)."""

    env: str
    tasks: tuple[str, ...]
    """Validation tasks of the environment's train split, played from their start (`success`)."""
    prompts: tuple[str, ...]
    """Policy prompts at the validation tasks' expert states (`accuracy`)."""
    actions: tuple[str, ...]
    """The expert's action at each of `prompts`."""
    prompt: PromptConfig
    max_steps: int | None = None
    max_new_tokens: int = 24
    batch_size: int = 50

    def describe(self) -> dict[str, Any]:
        """What a stage's configuration records of it (resuming with another validation is refused)."""
        return {
            "env": self.env,
            "tasks": list(self.tasks),
            "states": len(self.prompts),
            "prompt": asdict(self.prompt),
            "max_steps": self.max_steps,
            "max_new_tokens": self.max_new_tokens,
        }

    def measure(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """accuracy, success and selection of `model` (put in eval mode for the measurement, then back)."""
        training = model.training
        model.eval()
        try:
            agent = ModelAgent(model, tokenizer, name="validation", max_new_tokens=self.max_new_tokens)
            right = 0
            for start in range(0, len(self.prompts), self.batch_size):
                batch = [AgentInput(p, []) for p in self.prompts[start : start + self.batch_size]]
                for reply, expert in zip(agent.act(batch), self.actions[start : start + self.batch_size], strict=True):
                    right += normalize(parse_action(reply) or "") == normalize(expert)
            results = run_episodes(
                self.env,
                "train",
                self.tasks,
                agent,
                prompt=self.prompt,
                batch_size=self.batch_size,
                max_steps=self.max_steps,
            )
        finally:
            model.train(training)
        accuracy = right / len(self.prompts) if self.prompts else 0.0
        success = sum(r.won for r in results) / len(results) if results else 0.0
        return {"accuracy": accuracy, "success": success, "selection": success + accuracy / 100}


def validator(
    env: str,
    records: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    prompt: PromptConfig,
    *,
    max_steps: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 50,
) -> Validator:
    """A `Validator` from the IL records built from the validation tasks' expert trajectories."""
    actions = tuple(parse_action(r["completion"]) or "" for r in records)
    return Validator(
        env,
        tuple(tasks),
        tuple(r["prompt"] for r in records),
        actions,
        prompt,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
