from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from firsthand import InvalidInputError, UnknownNameError
from firsthand.artifacts import load_branches, load_records
from firsthand.prompts import (
    OBS_CLOSE,
    OBS_OPEN,
    POLICY_INSTRUCTION,
    WORLD_MODEL_INSTRUCTION,
    parse_action,
    reflection_problems,
    split_conclusion,
    template_reflection,
)
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import (
    DROPPED,
    PARTIAL,
    BuildConfig,
    WriterConfig,
    build,
    star_requests,
    written_sr_requests,
)
from firsthand.stages.collect import collect


@pytest.fixture(scope="module")
def branches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    collect("household", "train", 10, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=4))
    return root / "branches"


def test_il_records_are_policy_prompts_with_expert_actions(branches: Path, tmp_path: Path) -> None:
    manifest = build("il", branches, tmp_path / "il")
    trajectories, _ = load_branches(branches)
    records = load_records(tmp_path / "il")
    assert manifest["count"] == len(records) == sum(len(t.steps) for t in trajectories)
    for r in records:
        assert r["prompt"].startswith(POLICY_INSTRUCTION)
        step = next(t for t in trajectories if t.id == r["trajectory_id"]).steps[r["step_index"]]
        assert r["completion"] == f"Action: {step.action}"
        assert f"Current observation: {step.observation}" in r["prompt"]
        assert parse_action(r["completion"]) == step.action


def test_iwm_records_have_their_own_instruction_and_delimited_targets(branches: Path, tmp_path: Path) -> None:
    build("iwm", branches, tmp_path / "iwm")
    _, all_branches = load_branches(branches)
    records = load_records(tmp_path / "iwm")
    assert len(records) == len(all_branches)  # alternatives and expert transitions
    assert {r["kind"] for r in records} == {"alternative", "expert_transition"}
    for r, b in zip(records, all_branches, strict=True):
        assert r["prompt"].startswith(WORLD_MODEL_INSTRUCTION) and POLICY_INSTRUCTION not in r["prompt"]
        assert r["prompt"].endswith(f"Action taken: {b.action}")
        assert r["completion"] == f"{OBS_OPEN}\n{b.next_observation}\n{OBS_CLOSE}"
        assert parse_action(r["completion"]) is None  # never looks like a policy answer


def test_sr_records_reflect_on_executed_alternatives_then_act(branches: Path, tmp_path: Path) -> None:
    manifest = build("sr", branches, tmp_path / "sr", BuildConfig(sr_alternatives=2))
    _, all_branches = load_branches(branches)
    outcomes = {(b.trajectory_id, b.step_index, b.action): b.next_observation for b in all_branches}
    records = load_records(tmp_path / "sr")
    assert manifest["stats"]["records"] == len(records) > 0
    for r in records:
        thought, action_line = r["completion"].rsplit("\nAction: ", 1)
        assert thought.startswith("Thought: ") and reflection_problems(thought, action_line) == []
        assert r["prompt"].startswith(POLICY_INSTRUCTION)
        # every alternative named in the reflection was executed from this state, with the outcome it quotes
        named = []
        for segment in thought.split("If I chose ")[1:]:
            head, _, rest = segment.partition(", ")
            group = re.findall(r"'([^']+)'", head)
            named += group
            quote = re.match(r'the result would be: "(.*?)" So ', rest)
            for action in group:
                outcome = " ".join(outcomes[(r["trajectory_id"], r["step_index"], action)].split())
                assert quote is None or all(part in outcome for part in re.split(r"(?<=[.!?]) ", quote.group(1)))
        assert len(named) == 2
        # anticipation: what the expert's own action reveals is not quoted before it is taken
        expert = " ".join(outcomes[(r["trajectory_id"], r["step_index"], action_line)].split())
        if not any(expert == " ".join(outcomes[(r["trajectory_id"], r["step_index"], a)].split()) for a in named):
            assert f'"{expert}' not in thought
        assert f"If I choose '{action_line}', I expect to get closer to my goal." in thought
        for word in ("expert", "Action 1", "correct", "option"):
            assert word.lower() not in thought.lower()


def test_exports_chat_files_and_a_datasets_table(branches: Path, tmp_path: Path) -> None:
    import datasets

    build("il", branches, tmp_path / "il")
    chat = [json.loads(line) for line in (tmp_path / "il" / "expert_sft.jsonl").open()]
    assert [m["role"] for m in chat[0]["messages"]] == ["user", "assistant"]
    table = datasets.load_dataset("parquet", data_files=str(tmp_path / "il" / "data.parquet"), split="train")
    assert {"prompt", "completion"} <= set(table.column_names) and len(table) == len(chat)
    assert (tmp_path / "il" / "samples.txt").read_text().count("=== PROMPT ===") == 3


def test_unknown_method(branches: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="'rft'.*il, iwm, sr, star"):
        build("rft", branches, tmp_path / "x")


def test_star_and_policy_reflector_need_a_named_model(branches: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="STaR's rationales are written by a model"):
        build("star", branches, tmp_path / "x")
    with pytest.raises(InvalidInputError, match="name the model itself"):
        build("sr", branches, tmp_path / "x", BuildConfig(writer=WriterConfig(reflector="policy")))
    with pytest.raises(InvalidInputError, match="tiny model is trained from scratch"):
        build("sr", branches, tmp_path / "y", BuildConfig(writer=WriterConfig(reflector="tiny")))


def _plant(out: Path, requests: list, texts: list[str]) -> None:
    """Texts as an interrupted build leaves them in written.partial.jsonl: a resumed build writes no more."""
    out.mkdir(parents=True)
    with open(out / PARTIAL, "w") as f:
        for (key, _, _, _), text in zip(requests, texts, strict=True):
            f.write(json.dumps({"key": f"{key[0]}:{key[1]}", "text": text}) + "\n")
        f.write('{"key": "train-0:0", "te')  # the line being written when the build was killed


def test_model_written_reflections_are_filtered_and_dropped_texts_kept_with_reasons(
    branches: Path, tmp_path: Path
) -> None:
    config = BuildConfig(sr_alternatives=2, writer=WriterConfig(reflector="smollm2-135m"))
    trajectories, all_branches = load_branches(branches)
    requests = written_sr_requests(trajectories, all_branches, config, defaultdict(int))
    # what the model reads: the state, every tried action with its outcome, the action to argue for; no labels
    key, asked, policy, action = requests[0]
    assert f'You will do "{action}"' in asked and asked.endswith(f"End with the line: Action: {action}")
    tried = [b for b in all_branches if (b.trajectory_id, b.step_index) == key]
    assert f'- "{action}" would lead to:' in asked and sum(f'- "{b.action}" would' in asked for b in tried) == 3
    for word in ("expert", "correct", "best", "option"):
        assert word not in asked.lower()
    planted = {
        "clean": "My goal needs the {a}. Going there first would let me find what I need, while the other moves "
        "would leave me where I am.\nAction: {a}",
        "label_leakage": "The expert would pick this one, as it gets me to what the goal needs.\nAction: {a}",
        "outcome_narration": "Now I see the room around me and what it holds, so this is the way.\nAction: {a}",
        "doubled_output": "I want to reach the goal soon. I want to reach the goal soon. So this it is.\nAction: {a}",
        "wrong_conclusion": "Looking around first would tell me more about the room and its things.\nAction: look",
        "no_conclusion": "Once upon a time, in a small town, there was a baker named Emma who baked treats.",
        "too_short": "Thought: fine.\nAction: {a}",
        "empty": "",
    }
    reasons = list(planted)
    texts = [planted[reasons[i % len(reasons)]].format(a=r[3]) for i, r in enumerate(requests)]
    _plant(tmp_path / "sr", requests, texts)

    manifest = build("sr", branches, tmp_path / "sr", config)  # no model is opened: every text is there

    stats = manifest["stats"]
    expected = [reasons[i % len(reasons)] for i in range(len(requests))]
    assert stats["sr_written"] == len(requests) and stats["resumed"] == len(requests) and "writer" not in stats
    assert stats["sr_kept"] == expected.count("clean") == manifest["count"]
    for reason in reasons[1:]:
        assert stats[f"sr_filtered_{reason}"] >= expected.count(reason), reason
    dropped = [json.loads(line) for line in (tmp_path / "sr" / DROPPED).open()]
    assert len(dropped) == len(requests) - stats["sr_kept"]
    for d in dropped:
        planted_as = expected[
            [f"{r[0][0]}:{r[0][1]}" for r in requests].index(f"{d['trajectory_id']}:{d['step_index']}")
        ]
        assert planted_as in d["problems"] and d["text"] == planted[planted_as].format(a=d["action"])
    for r in load_records(tmp_path / "sr"):  # the kept thought, then the expert action; the policy prompt
        assert r["completion"].startswith("Thought: My goal needs the") and r["prompt"].startswith(POLICY_INSTRUCTION)
        assert r["completion"].count("Action: ") == 1 and r["kind"] == "reflection"
    assert not (tmp_path / "sr" / PARTIAL).exists()
    assert manifest["config"]["writer"]["reflector"] == "smollm2-135m"


def test_star_keeps_rationales_that_reach_the_expert_action(branches: Path, tmp_path: Path) -> None:
    config = BuildConfig(writer=WriterConfig(reflector="smollm2-135m"))
    trajectories, _ = load_branches(branches)
    requests = star_requests(trajectories, config)
    assert len(requests) == sum(len(t.steps) for t in trajectories)
    key, asked, policy, action = requests[0]
    assert asked.startswith(policy) and "would lead to" not in asked  # no alternatives, no outcomes
    texts = [
        f"I need to move on with the task and this step follows from what I see.\nAction: {r[3] if i % 2 else 'look'}"
        for i, r in enumerate(requests)
    ]
    _plant(tmp_path / "star", requests, texts)
    manifest = build("star", branches, tmp_path / "star", config)
    assert manifest["stats"]["star_kept"] == len(requests) // 2 == manifest["count"]
    assert manifest["stats"]["star_filtered_wrong_conclusion"] == len(requests) - len(requests) // 2
    assert (tmp_path / "star" / "rationale_sft.jsonl").exists()
    assert {r["kind"] for r in load_records(tmp_path / "star")} == {"rationale"}


def test_reflection_filters_catch_known_failure_modes() -> None:
    assert reflection_problems("The expert action is best. So I will go to desk 1.", "go to desk 1") == [
        "label_leakage"
    ]
    assert "outcome_narration" in reflection_problems("Now I see the mug. So I will take mug 1.", "take mug 1")
    text = "I should open the drawer first to look inside it. "
    assert "doubled_output" in reflection_problems(text + text, "open drawer 1")
    assert reflection_problems("Going there would not help me, so I will go to sofa 1.", "go to desk 1") == [
        "wrong_conclusion"
    ]
    assert reflection_problems("", "look") == ["empty"]
    assert reflection_problems("Go. So I will look.", "look") == ["too_short"]
    assert "no_conclusion" in reflection_problems(
        "A long story about a baker who baked bread every single day.", "look"
    )
    assert "label_leakage" in reflection_problems("From this list the second one moves me on, so I will look.", "look")
    assert split_conclusion("Thought: I must check.\nAction: open drawer 1") == ("I must check.", "open drawer 1")
    assert split_conclusion("It helps, so I will take mug 1.") == ("It helps, so I will take mug 1.", "take mug 1")
    assert split_conclusion("no conclusion here") == ("no conclusion here", None)
    clean = template_reflection(
        "put a mug in desk.",
        "go to desk 1",
        [("look", "You are in the middle of a room."), ("inventory", "Nothing happens.")],
    )
    assert reflection_problems(clean, "go to desk 1") == []


def test_template_reflections_pass_the_filters_when_observations_repeat() -> None:
    """Two alternatives with the same outcome, a status line every outcome repeats, an outcome already quoted,
    and observations holding a filtered word: the template names, quotes and concludes without tripping the
    filters meant for model-written text."""
    status = "Your score has not changed in this game."
    tried = [
        ("open drawer 4", f"You open drawer 4. In it you see a letter. {status}"),
        ("open drawer 3", f"You open drawer 3. In it you see a letter. {status}"),
        ("look", "Nothing happens."),
        ("inventory", "Nothing happens."),
        ("read note", f"The note reads: the expert left the key in the box. {status}"),
        ("wait", f"You arrive at the hall. {status}"),
    ]
    text = template_reflection("find the coin.", "open box", tried)
    assert reflection_problems(text, "open box", quoted=[o for _, o in tried]) == []
    assert text.count(status) == 1 and text.count("In it you see a letter.") == 1
    assert "If I chose 'look' or 'inventory', nothing would happen" in text and text.endswith("So I will open box.")
    again = template_reflection("find the coin.", "open box", [("wait", "A hall."), ("rest", "Nothing. A hall.")])
    assert reflection_problems(again, "open box") == []


def test_reflections_state_the_goal_in_the_first_person() -> None:
    """Goals written as an instruction to the agent (ScienceWorld's) are turned into "My goal is to ..."."""
    for goal in (
        "Your task is to boil water. First, focus on the substance.",
        "boil water. First, focus on the substance.",
    ):
        reflection = template_reflection(goal, "look around", [])
        assert reflection.startswith("My goal is to boil water. First, focus on the substance. If I choose")
    assert template_reflection("put a mug in desk.", "look", []).startswith("My goal is to put a mug in desk.")


def test_parse_action() -> None:
    assert parse_action("Thought: hmm\nAction:  go to  desk 1 \n") == "go to desk 1"
    assert parse_action("Action: look\nAction: inventory") == "inventory"
    assert parse_action("go to desk 1") is None
    assert parse_action("Action:   ") is None


def test_policy_prompt_restates_the_goal_next_to_the_question() -> None:
    from firsthand.prompts import PromptConfig, policy_prompt

    history = [("You are in the middle of a room.", "go to fridge 1")]
    on = policy_prompt("put a cool egg in countertop.", history, "The fridge 1 is closed.", [], PromptConfig())
    assert on.startswith(POLICY_INSTRUCTION)
    assert on.endswith("The fridge 1 is closed.\n\nGoal: put a cool egg in countertop.\nWhat do you do next?")
    assert on.count("Goal: put a cool egg in countertop.") == 2  # also stated before the history
    off = policy_prompt(
        "put a cool egg in countertop.", history, "The fridge 1 is closed.", [], PromptConfig(restate_goal=False)
    )
    assert off.endswith("The fridge 1 is closed.\n\nWhat do you do next?")
    assert off.count("Goal:") == 1


def test_evaluation_renders_prompts_as_the_training_data_did(tmp_path: Path) -> None:
    """A model folder's prompt settings are read back as `train` wrote them."""
    from dataclasses import asdict

    from firsthand.artifacts import MODEL_PROMPT, read_model_prompt
    from firsthand.prompts import PromptConfig

    written = PromptConfig(history=1, show_valid_actions=False, max_observation_chars=99, restate_goal=False)
    model = tmp_path / "model"
    model.mkdir(parents=True)
    (model / MODEL_PROMPT).write_text(json.dumps(asdict(written)))  # what `train` writes beside the weights
    assert read_model_prompt(model) == written
    assert read_model_prompt(tmp_path / "nowhere" / "model") is None


def test_past_actions_keep_what_left_the_recent_window() -> None:
    from firsthand.prompts import PromptConfig, policy_prompt

    history = [("You are in the middle of a room.", "go to cabinet 1"), ("The cabinet 1 is closed.", "open cabinet 1")]
    history += [("You open the cabinet 1. It is empty.", "go to fridge 1")]
    on = policy_prompt(
        "put a cool egg in countertop.",
        history,
        "The fridge 1 is closed.",
        [],
        PromptConfig(history=2, past_actions=True),
    )
    assert "Earlier actions: go to cabinet 1\nRecent steps:" in on  # the recent two are not repeated
    assert on.count("open cabinet 1") == 1
    off = policy_prompt(
        "put a cool egg in countertop.", history, "The fridge 1 is closed.", [], PromptConfig(history=2)
    )
    assert "Earlier actions" not in off and "go to cabinet 1" not in off


def test_build_refuses_branches_whose_files_changed(branches: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "branches"
    shutil.copytree(branches, copy)
    shard = sorted(copy.glob("branches-*.jsonl"))[0]
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]))  # one record short, every line still valid
    with pytest.raises(InvalidInputError, match=f"{shard.name}.*differs from what the branch stage wrote"):
        build("il", copy, tmp_path / "il")
    assert not (tmp_path / "il").exists()


def test_a_finished_build_is_refused_with_other_settings(branches: Path, tmp_path: Path) -> None:
    build("sr", branches, tmp_path / "sr", BuildConfig(sr_alternatives=1))
    with pytest.raises(InvalidInputError, match="finished build stage.*sr_alternatives: 1 there, 2 now"):
        build("sr", branches, tmp_path / "sr", BuildConfig(sr_alternatives=2))


def test_expert_step_accuracy_scores_the_action_at_each_expert_state(tmp_path: Path) -> None:
    """Teacher-forced scoring, checked against an agent whose right answers are known: it names the last
    action of the sorted valid list, which is the expert's action exactly where the two coincide."""
    from firsthand.artifacts import load_trajectories
    from firsthand.stages.evaluate import expert_step_accuracy

    class LastValid:
        name, wants_candidates = "last-valid", False

        def act(self, inputs: list) -> list[str]:
            return [f"Action: {x.valid_actions[-1]}" for x in inputs]

    summary = expert_step_accuracy(LastValid(), "household", "id_test", 6, tmp_path / "acc.json")
    collect("household", "id_test", 6, tmp_path / "e")
    steps = [s for t in load_trajectories(tmp_path / "e") for s in t.steps]
    expected = sum(s.valid_actions[-1] == s.action for s in steps)
    assert summary["states"] == len(steps) and summary["episodes"] == 6
    assert summary["step_accuracy"] == expected / len(steps) and 0 < expected < len(steps)
    states = json.loads((tmp_path / "acc.json").read_text())["states"]
    assert [s["expert"] for s in states] == [s.action for s in steps]


@pytest.mark.slow
def test_star_trains_like_sr_on_its_rationales(branches: Path, tmp_path: Path) -> None:
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.stages.evaluate import thinks
    from firsthand.stages.train import TrainConfig, plan_budget, planned_stages, train

    config = BuildConfig(writer=WriterConfig(reflector="smollm2-135m"))
    requests = star_requests(load_branches(branches)[0], config)
    _plant(
        tmp_path / "star",
        requests,
        [f"This step moves me on toward what the goal asks.\nAction: {r[3]}" for r in requests],
    )
    build("star", branches, tmp_path / "star", config)
    build("il", branches, tmp_path / "il")
    data = {"il": tmp_path / "il", "star": tmp_path / "star"}
    train_config = TrainConfig(epochs=1, batch_size=8, max_length=512)
    n = len(requests)
    assert planned_stages("star", data, train_config) == [("star+expert", plan_budget("sr", n, n, train_config)[0][1])]
    texts = (r["prompt"] + r["completion"] for d in data.values() for r in load_records(d))
    tiny = create_tiny(texts, tmp_path / "tiny", TinyConfig(hidden_size=64, intermediate_size=128, layers=2, heads=2))
    manifest = train("star", data, tiny, tmp_path / "train", train_config)
    assert [s["data"] for s in manifest["stages"]] == ["star+expert"]
    assert thinks(tmp_path / "train" / "model")  # evaluated with a thought's generation budget, as SR
