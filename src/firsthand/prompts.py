"""Every prompt template of firsthand, in one place.

Three kinds of text go to the model:

- the **policy prompt** (IL, SR and evaluation): task goal, recent history, current observation and,
  optionally, the valid actions; the model answers ``Action: <action>`` (IL) or
  ``Thought: <reflection>`` then ``Action: <action>`` (SR). Both parse the same way at test time.
- the **world-model prompt** (IWM): its own instruction, the state and the action taken; the model
  answers with the next observation between delimiters. IWM never uses the policy's instruction, so the
  policy does not learn to emit observations when asked for an action.
- the **reflection** (SR target), written here from a template filled with observed outcomes until a
  language model writes them: first person, anticipatory, never naming an "expert" or numbering options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

POLICY_INSTRUCTION = (
    "You are an agent in a text environment. Reach the goal by choosing one action at a time. "
    "Reply with the action after 'Action:'."
)
WORLD_MODEL_INSTRUCTION = (
    "You are modelling a text environment. Given the state and an action, predict the observation the "
    "environment returns. Reply with the observation between [observation] and [/observation]."
)
OBS_OPEN, OBS_CLOSE = "[observation]", "[/observation]"


@dataclass(frozen=True)
class PromptConfig:
    """How states are rendered into prompts."""

    history: int = 2
    """Past (observation, action) steps shown before the current observation."""
    show_valid_actions: bool = True
    """List the valid actions in the policy prompt (when the environment has them)."""
    max_observation_chars: int = 200
    """Observations in the history are cut to this many characters (the current one never is)."""
    past_actions: bool = False
    """Also list, compactly, every action taken before the recent steps: what was done and where the agent
    has already looked stay in the prompt when their observations have left it."""
    restate_goal: bool = True
    """Repeat the goal right before the question, next to where the action is written. Actions copy names
    from the goal ("take tomato 1 ..."); a model trained from scratch learns that copy far more easily
    over a short distance than from the top of a long prompt (docs/calibration.md)."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_state(
    goal: str,
    history: Sequence[tuple[str, str]],
    observation: str,
    config: PromptConfig,
) -> str:
    """The state s_i as text: goal, the last `config.history` steps, and the current observation."""
    lines = [f"Goal: {goal}"]
    recent = list(history)[-config.history :] if config.history else []
    earlier = list(history)[: len(history) - len(recent)]
    if config.past_actions and earlier:
        lines.append("Earlier actions: " + "; ".join(action for _, action in earlier))
    if recent:
        lines.append("Recent steps:")
        for past_observation, past_action in recent:
            lines.append(f"  Observation: {_cut(past_observation, config.max_observation_chars)}")
            lines.append(f"  Action: {past_action}")
    lines.append(f"Current observation: {observation}")
    return "\n".join(lines)


def policy_prompt(
    goal: str,
    history: Sequence[tuple[str, str]],
    observation: str,
    valid_actions: Sequence[str],
    config: PromptConfig,
) -> str:
    parts = [POLICY_INSTRUCTION, render_state(goal, history, observation, config)]
    if config.show_valid_actions and valid_actions:
        parts.append("Valid actions: " + ", ".join(valid_actions))
    parts.append(f"Goal: {goal}\nWhat do you do next?" if config.restate_goal else "What do you do next?")
    return "\n\n".join(parts)


def action_completion(action: str) -> str:
    return f"Action: {action}"


def reflection_completion(reflection: str, action: str) -> str:
    return f"Thought: {reflection}\nAction: {action}"


def world_model_prompt(
    goal: str, history: Sequence[tuple[str, str]], observation: str, action: str, config: PromptConfig
) -> str:
    return "\n\n".join(
        [WORLD_MODEL_INSTRUCTION, render_state(goal, history, observation, config), f"Action taken: {action}"]
    )


def world_model_completion(next_observation: str) -> str:
    return f"{OBS_OPEN}\n{next_observation}\n{OBS_CLOSE}"


_ACTION = re.compile(r"Action:\s*(.+)")


def parse_action(text: str) -> str | None:
    """The action in a model's reply: the text after the last "Action:" on its line; None if absent."""
    found = _ACTION.findall(text)
    if not found:
        return None
    action = " ".join(found[-1].strip().split())
    return action or None


# ------------------------------------------------------------------------------------------------
# Template reflections (the default reflector until a language model writes them)
# ------------------------------------------------------------------------------------------------
_TASK_PREAMBLE = re.compile(r"^(?:your )?(?:task|goal) is to\s+", re.IGNORECASE)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def template_reflection(goal: str, action: str, outcome: str, alternatives: Sequence[tuple[str, str]]) -> str:
    """A first-person, anticipatory reflection grounded in outcomes that were really observed.

    `alternatives` are (action, observed next observation) pairs executed from the same state; the
    reflection contrasts them with `action` (whose observed outcome is `outcome`) and concludes with
    `action`. It speaks of consequences conditionally ("would"), never as already seen, and never
    names a demonstrator, an option number or a "correct" choice.
    """
    goal_text = _TASK_PREAMBLE.sub("", goal.strip()).rstrip(".")  # ScienceWorld: "Your task is to boil water."
    sentences = [f"My goal is to {_lower_first(goal_text)}."]
    for alt, result in alternatives:
        if result.strip() == "Nothing happens.":
            sentences.append(f"If I chose '{alt}', nothing would happen, so it would not help.")
        else:
            sentences.append(
                f"If I chose '{alt}', the result would be: \"{result}\" That does not move me toward my goal."
            )
    sentences.append(f"If I choose '{action}', the result should be: \"{outcome}\" That brings me closer to my goal.")
    sentences.append(f"So I will {action}.")
    return " ".join(sentences)


# Regex pre-filters for generated reflections (counted in the build report; read samples too).
LABEL_LEAKAGE = re.compile(
    r"\b(expert|demonstrat\w*|ground[- ]truth|correct (?:choice|action|answer)|option \d|action \d|choice \d)\b",
    re.IGNORECASE,
)
OUTCOME_NARRATION = re.compile(
    r"\b(now I (?:see|have|am)|I (?:just|already) (?:saw|did|took|opened|arrived)|I can now see)\b", re.IGNORECASE
)


def reflection_problems(reflection: str, action: str) -> list[str]:
    """Names of the known failure modes found in a generated reflection (empty when clean)."""
    problems = []
    if LABEL_LEAKAGE.search(reflection):
        problems.append("label_leakage")
    if OUTCOME_NARRATION.search(reflection):
        problems.append("outcome_narration")
    half = len(reflection) // 2
    if len(reflection) > 80 and reflection[:half].strip() and reflection[half:].strip() == reflection[:half].strip():
        problems.append("doubled_output")
    conclusion = re.findall(r"I will (.+?)\.?$", reflection.strip())
    if conclusion and " ".join(conclusion[-1].split()) != action:
        problems.append("wrong_conclusion")
    return problems
