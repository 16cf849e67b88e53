"""Every prompt template of firsthand, in one place.

Three kinds of text go to the model:

- the **policy prompt** (IL, SR and evaluation): task goal, recent history, current observation and,
  optionally, the valid actions; the model answers ``Action: <action>`` (IL) or
  ``Thought: <reflection>`` then ``Action: <action>`` (SR). Both parse the same way at test time.
- the **world-model prompt** (IWM): its own instruction, the state and the action taken; the model
  answers with the next observation between delimiters. IWM never uses the policy's instruction, so the
  policy does not learn to emit observations when asked for an action.
- the **reflection** (SR target), from a template filled with observed outcomes or written by a language
  model from `reflection_prompt`: first person, anticipatory, never naming an "expert" or numbering
  options; `reflection_problems` filters what a model wrote. STaR's rationales come from
  `rationale_prompt`, the policy prompt with no alternatives and no outcomes.
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


PLACEHOLDER_THOUGHT = "I will choose the action that moves me toward my goal."
"""The thought of the expert records in SR's (and STaR's) mixed set, as the authors' ALFWorld release gives its
IL targets one: every record then begins with "Thought:", so the first token is no choice between thinking
and acting (greedy decoding chose acting at every state otherwise)."""


def with_placeholder_thought(completion: str) -> str:
    """An expert record's ``Action: a`` as ``Thought: PLACEHOLDER_THOUGHT`` then the action."""
    return f"Thought: {PLACEHOLDER_THOUGHT}\n{completion}"


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
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
NOTHING_HAPPENS = "Nothing happens."
"""The observation of an action that changes nothing (ALFWorld's wording, which several adapters share)."""


def _sentence_key(sentence: str) -> str:
    """How `_doubled` compares sentences: words lowercased; "" for one too short (under 4 words) to count."""
    words = sentence.split()
    return " ".join(words).lower() if len(words) >= 4 else ""


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _quoted(actions: Sequence[str]) -> str:
    names = [f"'{a}'" for a in actions]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _unseen(outcome: str, seen: set[str]) -> str:
    """`outcome` without the sentences the reflection already quoted (a status line every step repeats), so a
    template never writes a sentence twice; the sentences it keeps are added to `seen`."""
    kept = []
    for sentence in _SENTENCE_END.split(outcome.strip()):
        key = _sentence_key(sentence)
        if key in seen:
            continue
        if key:
            seen.add(key)
        kept.append(sentence)
    return " ".join(kept).strip()


def template_reflection(goal: str, action: str, alternatives: Sequence[tuple[str, str]]) -> str:
    """A first-person, anticipatory reflection grounded in outcomes that were really observed.

    `alternatives` are (action, observed next observation) pairs executed from the same state; the
    reflection quotes what each led to, which was observed from this state, and concludes with `action`.
    What `action` itself will reveal is not quoted: the agent has not taken it yet, and a reflection that
    shows its outcome teaches the policy to write, before acting, what only acting shows (the paper's
    outcome-narration pitfall). It speaks of consequences conditionally ("would"), and never names a
    demonstrator, an option number or a "correct" choice. Alternatives with the same outcome are named
    together and a sentence already quoted is not quoted again, so the text passes the filters of
    `reflection_problems` whatever an environment's observations repeat.
    """
    goal_text = _TASK_PREAMBLE.sub("", goal.strip()).rstrip(".")  # ScienceWorld: "Your task is to boil water."
    sentences = [f"My goal is to {_lower_first(goal_text)}."]
    seen = {_sentence_key(sentences[0])}
    groups: dict[str, list[str]] = {}
    for alt, result in alternatives:
        groups.setdefault(" ".join(result.split()), []).append(alt)
    for result, alts in groups.items():
        names = _quoted(alts)
        fresh = _unseen(result, seen) if result != NOTHING_HAPPENS else ""
        if result == NOTHING_HAPPENS:
            sentences.append(f"If I chose {names}, nothing would happen, so it would not help.")
        elif fresh:
            sentences.append(f'If I chose {names}, the result would be: "{fresh}" So {names} would not help me.')
        else:
            sentences.append(f"If I chose {names}, I would learn nothing new, so {names} would not help me.")
    sentences.append(f"If I choose '{action}', I expect to get closer to my goal.")
    sentences.append(f"So I will {action}.")
    return " ".join(sentences)


# ------------------------------------------------------------------------------------------------
# Reflections and rationales written by a model
# ------------------------------------------------------------------------------------------------
REFLECTION_INSTRUCTION = (
    "You are an agent in a text environment, about to choose your next action. You know what each of a few "
    "actions would lead to from here. Think it through before you act."
)


def reflection_prompt(
    goal: str,
    history: Sequence[tuple[str, str]],
    observation: str,
    action: str,
    tried: Sequence[tuple[str, str]],
    config: PromptConfig,
    outcome_chars: int = 300,
) -> str:
    """What a model reads to write the reflection for `action` at a state: the state as the policy sees it,
    and `tried`, (action, observed next observation) pairs in a given order, `action`'s own among them.

    The slots are plain actions and outcomes: nothing is called "expert", "correct" or "best", so those
    words have nowhere to leak from. It asks for an anticipatory, first-person monologue ending with
    `action` (the filters in `reflection_problems` check both).
    """
    outcomes = "\n".join(f'- "{a}" would lead to: {_cut(" ".join(o.split()), outcome_chars)}' for a, o in tried)
    ask = (
        f'You will do "{action}". In three to five sentences, in the first person, explain why "{action}" moves '
        f"you toward the goal more than the other actions do. Speak of what each action would lead to, as "
        f"something that has not happened yet. Do not mention this list or number the actions. End with the "
        f"line: Action: {action}"
    )
    return "\n\n".join(
        [
            REFLECTION_INSTRUCTION,
            render_state(goal, history, observation, config),
            "What each action would lead to:\n" + outcomes,
            ask,
        ]
    )


RATIONALE_REQUEST = "First think in a few sentences about what to do and why, then give the action after 'Action:'."


def rationale_prompt(policy: str) -> str:
    """STaR's prompt: the policy prompt (no alternatives, no outcomes) asking for a thought before the action."""
    return f"{policy}\n{RATIONALE_REQUEST}"


def split_conclusion(text: str) -> tuple[str, str | None]:
    """A generated monologue as (thought, concluded action): the action on its last "Action:" line (or its
    closing "I will ...", the template's form), the thought everything before that line."""
    text = re.sub(r"^\s*(?:Thought:\s*)", "", text.strip())
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if _ACTION.search(lines[i]):
            head = lines[i][: _ACTION.search(lines[i]).start()]  # type: ignore[union-attr]
            return "\n".join([*lines[:i], head]).strip(), parse_action(lines[i])
    closing = re.findall(r"I will (.+?)\.?$", text)
    return text, (" ".join(closing[-1].split()) if closing else None)


# Regex pre-filters for generated reflections (counted in the build report; read samples too).
LABEL_LEAKAGE = re.compile(
    r"\b(expert|demonstrat\w*|ground[- ]truth|correct (?:choice|action|answer)|option \d|action \d|choice \d|"
    r"(?:the|this) list)\b",
    re.IGNORECASE,
)
OUTCOME_NARRATION = re.compile(
    r"\b(now I (?:see|have|am)|I (?:just|already) (?:saw|did|took|opened|arrived)|I can now see)\b", re.IGNORECASE
)
_NUMBERED_NAME = re.compile(r"\b[a-z]+ \d+\b")


def unseen_names(reflection: str, visible: Sequence[str]) -> set[str]:
    """Numbered names ("mug 1", "cabinet 3") a reflection mentions that none of the `visible` texts (the prompt,
    the actions tried and their observed outcomes) does: what the agent could only know after acting. A
    counter for the build report, not a filter: names are how household-like environments reveal things."""
    shown = {name for text in visible for name in _NUMBERED_NAME.findall(text.lower())}
    return set(_NUMBERED_NAME.findall(reflection.lower())) - shown


MIN_THOUGHT_WORDS = 8
FILTERS: tuple[str, ...] = (
    "empty",
    "too_short",
    "label_leakage",
    "outcome_narration",
    "doubled_output",
    "no_conclusion",
    "wrong_conclusion",
)
"""Every reason a generated reflection or rationale is dropped (`reflection_problems`)."""


def _doubled(text: str) -> bool:
    """The monologue written twice, or a sentence of it repeated (small models loop)."""
    half = len(text) // 2
    if len(text) > 80 and text[:half].strip() and text[half:].strip() == text[:half].strip():
        return True
    sentences = [key for key in map(_sentence_key, _SENTENCE_END.split(text)) if key]
    return len(sentences) != len(set(sentences))


def reflection_problems(
    reflection: str, action: str, conclusion: str | None = None, *, quoted: Sequence[str] = ()
) -> list[str]:
    """Names of the known failure modes (`FILTERS`) found in a reflection for `action` (empty when clean).

    `conclusion`: the action the monologue ends with (`split_conclusion`); None reads it from a closing
    "I will ..." sentence, and a model's text that ends with neither has no conclusion. `quoted`: observations
    the text quotes (a template's): their words are the environment's, not the writer's, so label leakage and
    outcome narration are looked for outside them."""
    text = reflection.strip()
    if not text:
        return ["empty"]
    own = text
    for observation in sorted(quoted, key=len, reverse=True):
        for sentence in _SENTENCE_END.split(" ".join(observation.split())):
            if sentence:
                own = own.replace(sentence, " ")
    problems = []
    if len(text.split()) < MIN_THOUGHT_WORDS:
        problems.append("too_short")
    if LABEL_LEAKAGE.search(own):
        problems.append("label_leakage")
    if OUTCOME_NARRATION.search(own):
        problems.append("outcome_narration")
    if _doubled(text):
        problems.append("doubled_output")
    if conclusion is None:
        conclusion = split_conclusion(text)[1]
    if conclusion is None:
        problems.append("no_conclusion")
    elif " ".join(conclusion.split()).lower() != " ".join(action.split()).lower():
        problems.append("wrong_conclusion")
    return problems
