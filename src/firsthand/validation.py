"""Validation during training: how a checkpoint is measured on tasks no comparison reports.

Budgets only mean something at a converged IL (METHOD.md, section 3): IL trains until validation stops
improving, its best step count becomes every method's budget, and each method is reported at the checkpoint
its own validation picks. A `Validator` measures a model in training on the validation tasks (training tasks
after the demonstrations, so disjoint from them and from both test splits):

- ``accuracy``: teacher-forced, the expert's reply at each expert state of the validation tasks is the
  model's likeliest token at every position (one forward pass per state, no generation; a model that thinks
  first is given the placeholder thought its expert records were trained with);
- ``success``: won episodes of the policy, greedy, from each validation task's start;
- ``selection``: the one number a checkpoint is chosen by. Under ``select_by="success"`` success plus a
  hundredth of accuracy (success decides; accuracy breaks its ties, which a few episodes make frequent);
  under ``"accuracy"`` accuracy alone, and no episode is played (where a few validation episodes win too
  rarely to tell checkpoints apart, and a model that thinks would write a thought at every step of them).

The train stage hands it to the Trainer as its evaluation (`stages.train`), so Hugging Face's own best-
checkpoint tracking and early stopping choose the step, and an interrupted run resumes with both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from firsthand.contract import InvalidInputError
from firsthand.inference.agents import ModelAgent
from firsthand.inference.episodes import run_episodes
from firsthand.prompts import PromptConfig, with_placeholder_thought

SELECT_BY: tuple[str, ...] = ("success", "accuracy")
"""What a checkpoint is chosen by: validation success (accuracy breaking ties), or teacher-forced accuracy."""


@dataclass(frozen=True)
class Validator:
    """The validation a training stage is measured by (its settings are part of the stage's configuration)."""

    env: str
    tasks: tuple[str, ...]
    """Validation tasks of the environment's train split, played from their start (`success`)."""
    prompts: tuple[str, ...]
    """Policy prompts at the validation tasks' expert states (`accuracy`)."""
    completions: tuple[str, ...]
    """The expert's reply (``Action: ...``) at each of `prompts`."""
    prompt: PromptConfig
    max_steps: int | None = None
    max_new_tokens: int = 24
    batch_size: int = 50
    thinks: bool = False
    """The model writes a thought before its action (SR, STaR): the expert replies begin with the placeholder
    thought, as its expert records did in training (`prompts.with_placeholder_thought`)."""
    select_by: str = "success"
    """`SELECT_BY`: success (the validation tasks' episodes are played) or accuracy (none is)."""

    def describe(self) -> dict[str, Any]:
        """What a stage's configuration records of it (resuming with another validation is refused)."""
        return {
            "env": self.env,
            "tasks": list(self.tasks),
            "states": len(self.prompts),
            "prompt": asdict(self.prompt),
            "max_steps": self.max_steps,
            "max_new_tokens": self.max_new_tokens,
            "accuracy": "teacher-forced" + (", placeholder thought" if self.thinks else ""),
            "select_by": self.select_by,
        }

    def measure(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """accuracy, success and selection of `model` (put in eval mode for the measurement, then back); no
        success under `select_by="accuracy"`, where no episode is played."""
        training = model.training
        model.eval()
        try:
            agent = ModelAgent(model, tokenizer, name="validation", max_new_tokens=self.max_new_tokens)
            replies = [with_placeholder_thought(c) if self.thinks else c for c in self.completions]
            right = 0
            for start in range(0, len(self.prompts), self.batch_size):
                end = start + self.batch_size
                right += sum(teacher_forced(agent, self.prompts[start:end], replies[start:end]))
            results = []
            if self.select_by == "success":
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
        if self.select_by == "accuracy":
            return {"accuracy": accuracy, "selection": accuracy}
        success = sum(r.won for r in results) / len(results) if results else 0.0
        return {"accuracy": accuracy, "success": success, "selection": success + accuracy / 100}


def teacher_forced(agent: ModelAgent, prompts: Sequence[str], replies: Sequence[str]) -> list[bool]:
    """Whether each reply, and the end of the reply after it, is the model's likeliest continuation token by
    token given the prompt in the agent's chat template: greedy decoding would write exactly it."""
    import torch

    tokenizer, model = agent.tokenizer, agent.model
    eos = tokenizer.eos_token_id
    rows, starts = [], []
    for prompt, reply in zip(prompts, replies, strict=True):
        head = tokenizer(agent.render(prompt), add_special_tokens=False)["input_ids"][-agent.max_prompt_tokens :]
        tail = tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos]
        rows.append(head + tail)
        starts.append(len(head))
    # Left-padded, so that every reply ends the row: logits are computed for the last `keep` positions only
    # (a 49k-token vocabulary over whole prompts would take gigabytes).
    longest = max(map(len, rows))
    keep = max(len(r) - start for r, start in zip(rows, starts, strict=True)) + 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
        ).logits
    predicted = logits.argmax(-1).cpu()  # column j predicts the token at longest - keep + j + 1
    right = []
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        n = len(row) - start  # the reply's tokens: the last n of the row, predicted by the n positions before them
        right.append(bool((predicted[i, keep - n - 1 : keep - 1] == ids[i, longest - n :]).all()))
    return right


def validator(
    env: str,
    records: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    prompt: PromptConfig,
    *,
    max_steps: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 50,
    thinks: bool = False,
    select_by: str = "success",
) -> Validator:
    """A `Validator` from the IL records built from the validation tasks' expert trajectories."""
    if select_by not in SELECT_BY:
        raise InvalidInputError(f"unknown selection {select_by!r}; checkpoints are chosen by {' or '.join(SELECT_BY)}")
    return Validator(
        env,
        tuple(tasks),
        tuple(r["prompt"] for r in records),
        tuple(r["completion"] for r in records),
        prompt,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        thinks=thinks,
        select_by=select_by,
    )
