"""Choosing among valid actions by likelihood (`inference.ScoringAgent`), beside free generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from firsthand.inference.agents import AgentInput, ModelAgent, ScoringAgent


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> ModelAgent:
    from firsthand.models import TinyConfig, create_tiny, load

    texts = ["Goal: put a mug in cabinet 1\nAction: go to cabinet 10", "Action: take mug 1 from desk 2"]
    folder = create_tiny(texts, tmp_path_factory.mktemp("tiny") / "m", TinyConfig(layers=1, hidden_size=64, heads=2))
    return ModelAgent(*load(folder))


def naive_scores(agent: ModelAgent, prefix: str, actions: list[str]) -> list[float]:
    """Each candidate's whole sequence read alone, no cache: the log-probabilities of the tokens after the part
    every candidate shares."""
    import torch

    tok, eos = agent.tokenizer, agent.tokenizer.eos_token_id
    full = [tok(prefix + a, add_special_tokens=False)["input_ids"] + [eos] for a in actions]
    shared = 0
    while shared < min(map(len, full)) - 1 and all(f[shared] == full[0][shared] for f in full):
        shared += 1
    scores = []
    for ids in full:
        with torch.no_grad():
            logits = agent.model(input_ids=torch.tensor([ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), -1)
        scores.append(sum(float(logprobs[i - 1, ids[i]]) for i in range(shared, len(ids))))
    return scores


def test_scores_equal_those_of_each_candidate_read_alone(untrained: ModelAgent) -> None:
    scorer = ScoringAgent(untrained)
    prefix = untrained.render("Goal: put a mug in cabinet 1\nWhat do you do next?") + "Action: "
    actions = ["go to cabinet 1", "go to cabinet 10", "take mug 1 from desk 2", "look"]
    assert scorer.scores(prefix, actions) == pytest.approx(naive_scores(untrained, prefix, actions), abs=1e-4)
    # a reply is always one of the valid actions, written as the policy would write it
    replies = scorer.act([AgentInput("Goal: x\nWhat do you do next?", actions), AgentInput("Goal: y", ["look"])])
    assert replies[0].removeprefix("Action: ") in actions and replies[1] == "Action: look"


@pytest.mark.parametrize("score_tokens", [1, 4096])
def test_inputs_scored_together_score_as_each_read_alone(untrained: ModelAgent, score_tokens: int) -> None:
    # packs of different lengths and candidate counts share a padded batch (4096) or go one a forward (1)
    scorer = ScoringAgent(untrained, score_tokens=score_tokens)
    prompts = ["Goal: put a mug in cabinet 1", "Goal: x\nWhat do you do next?", "Goal: take the mug from desk 2 now"]
    actions = [["go to cabinet 1", "go to cabinet 10", "look"], ["look"], ["take mug 1 from desk 2", "go to desk 2"]]
    prefixes = [untrained.render(p) + "Action: " for p in prompts]
    together = scorer.scores_many(prefixes, actions)
    for prefix, acts, scores in zip(prefixes, actions, together, strict=True):
        assert scores == pytest.approx(naive_scores(untrained, prefix, acts), abs=1e-4)


def test_a_model_that_thinks_scores_the_actions_after_its_own_thought(untrained: ModelAgent) -> None:
    generator = ModelAgent(untrained.model, untrained.tokenizer, max_new_tokens=12, response_prefix="Thought:")
    scorer = ScoringAgent(generator, thinks=True)
    inputs = [AgentInput("Goal: x\nWhat do you do next?", ["look", "go to cabinet 1"]), AgentInput("Goal: y", ["look"])]
    written, replies = generator.act(inputs), scorer.act(inputs)
    for x, text, reply in zip(inputs, written, replies, strict=True):
        cut = text.rfind("Action:")
        head = (text[:cut] if cut >= 0 else text.rstrip() + "\n").removeprefix("Thought:")
        scores = scorer.scores(generator.render(x.prompt) + head + "Action: ", x.valid_actions)
        # the thought as the model wrote it, then the action it scores highest after that thought
        assert reply == head + "Action: " + x.valid_actions[scores.index(max(scores))]


@pytest.mark.slow
def test_a_trained_policy_that_scores_never_takes_an_invalid_action(household_il: Path, tmp_path: Path) -> None:
    from firsthand.stages.evaluate import evaluate, make_agent, model_prompt

    prompt = model_prompt(household_il)
    scored = evaluate(
        make_agent(household_il, decision="score"), "household", "train", 6, tmp_path / "s.json", prompt=prompt
    )
    generated = evaluate(make_agent(household_il), "household", "train", 6, tmp_path / "g.json", prompt=prompt)
    assert scored["invalid_rate"] == 0.0
    assert scored["success"] >= 0.5 and generated["success"] >= 0.5  # both decide well on tasks it was trained on
