from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from firsthand import SPLITS, InvalidInputError, NoExpertError, ReplayError, make
from firsthand.envs.bfcl import END_TURN, BfclEnv, entries
from firsthand.envs.bfcl.env import EXCLUDED
from firsthand.envs.calls import Call, format_call, parse_call
from firsthand.replay import replay
from firsthand.testing import EnvContract


class TestBfclContract(EnvContract):
    env_name = "bfcl"


def _env(task: str) -> BfclEnv:
    split = "ood_test" if "base" not in task else ("id_test" if int(task.rsplit("_", 1)[1]) % 4 == 3 else "train")
    env = make("bfcl", split)
    assert isinstance(env, BfclEnv)
    env.reset(task)
    return env


# -- splits and tasks ---------------------------------------------------------------------------
def test_splits_sizes_disjoint_and_interleaved() -> None:
    ids = {split: make("bfcl", split).tasks() for split in SPLITS}
    assert (len(ids["train"]), len(ids["id_test"]), len(ids["ood_test"])) == (150, 50, 599)
    assert not set(ids["train"]) & set(ids["id_test"])
    assert set(ids["train"]) | set(ids["id_test"]) == {f"multi_turn_base_{i}" for i in range(200)}
    assert all("base" not in t for t in ids["ood_test"]) and EXCLUDED.isdisjoint(ids["ood_test"])
    # a short prefix covers the four domains (and the three ood categories)
    assert {int(t.rsplit("_", 1)[1]) // 50 for t in ids["train"][:4]} == {0, 1, 2, 3}
    assert {t.rsplit("_", 1)[0] for t in ids["ood_test"][:3]} == {
        "multi_turn_miss_func",
        "multi_turn_miss_param",
        "multi_turn_long_context",
    }


def test_expert_wins_on_a_third_of_every_split() -> None:
    for split in SPLITS:
        env = make("bfcl", split)
        for task in env.tasks()[::3]:
            env.reset(task)
            trajectory = replay(env, task, env.expert_actions())
            assert trajectory.steps[-1].terminated and not trajectory.steps[-1].truncated
            assert not any(s.next_observation.startswith("Invalid action") for s in trajectory.steps), task


def test_excluded_entry_really_fails_and_is_refused() -> None:
    entry = entries()["multi_turn_miss_func_49"]
    assert entry.added == ((3, ("wc", "tail", "cat")),)  # tail() becomes available at turn 3 ...
    assert any(call.startswith("tail(") for call in entry.ground_truth[1])  # ... but the ground truth calls it at 1
    env = make("bfcl", "ood_test")
    with pytest.raises(InvalidInputError, match="excluded"):
        env.reset("multi_turn_miss_func_49")
    with pytest.raises(InvalidInputError, match="'kitchen-1'"):
        env.reset("kitchen-1")


def test_goal_and_first_observation() -> None:
    env = make("bfcl", "train")
    obs, info = env.reset("multi_turn_base_0")
    assert obs.startswith("User: Move 'final_report.pdf' within document directory")
    assert "\ncd(folder: str)\n" in obs and "\nls(a: bool = False)\n" in obs
    assert info["goal"] == (
        "Carry out the user's 4 requests, one per turn, by calling the functions of TwitterAPI and "
        "GorillaFileSystem, one call per action; call end_turn() when the current request is done."
    )
    assert info["task"] == "multi_turn_base_0" and info["turn"] == 0 and info["turns"] == 4


# -- parsing ------------------------------------------------------------------------------------
def test_parse_call_accepts_bfcl_forms() -> None:
    assert parse_call("cd(folder='document')") == Call("cd", (), (("folder", "document"),))
    assert parse_call("  [sort('a.txt')] ") == Call("sort", ("a.txt",), ())
    assert parse_call("f(x=[1, 2.5], y={'a': None}, z=-3, w=True)").kwargs == (
        ("x", [1, 2.5]),
        ("y", {"a": None}),
        ("z", -3),
        ("w", True),
    )
    assert format_call("mv", {"source": "it's", "destination": "b"}) == "mv(source=\"it's\", destination='b')"
    assert parse_call(format_call("mv", {"source": "it's", "destination": "b"})).kwargs[0] == ("source", "it's")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("cd(folder='x'", "not a function call"),
        ("cd", "not a function call"),
        ("[ls(), pwd()]", "2 calls"),
        ("os.system('ls')", "bare name"),
        ("cd(folder=__import__('os').getcwd())", "not a literal"),
        ("cd(*['x'])", r"\*arguments"),
        ("cd(**{'folder': 'x'})", r"\*\*arguments"),
    ],
)
def test_parse_call_rejects_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_call(text)


def test_expert_actions_are_canonical() -> None:
    env = _env("multi_turn_base_0")
    actions = env.expert_actions()
    assert "sort(file_name='final_report.pdf')" in actions  # the ground truth writes sort('final_report.pdf')
    assert actions.count(END_TURN) == 4 and actions[-1] == END_TURN
    assert all(a == format_call(parse_call(a).name, dict(parse_call(a).kwargs)) for a in actions)
    env.step(actions[0])
    with pytest.raises(NoExpertError, match="reset"):
        env.expert_actions()


# -- stepping -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "start"),
    [
        ("cd folder", "Invalid action: 'cd folder' is not a function call"),
        ("rm_rf(path='/')", "Invalid action: there is no function 'rm_rf'; available: "),
        (
            "cd(directory='document')",
            "Invalid action: cd(): unexpected keyword argument 'directory'; the signature is cd(folder: str)",
        ),
        ("cd()", "Invalid action: cd(): missing a required argument: 'folder'"),
        ("end_turn(now=True)", "Invalid action: end_turn() takes no arguments"),
        ("tail(file_name='final_report.pdf', lines='x')", "Error during execution: "),
        ("power(base=10, exponent=10**9)", "Invalid action: argument '10 ** 9' of power() is not a literal"),
    ],
)
def test_invalid_actions_say_why_and_count_as_steps(action: str, start: str) -> None:
    env = _env("multi_turn_base_0")
    env.step("cd(folder='document')")
    before = env.snapshot()
    r = env.step(action)
    assert r.observation.startswith(start), r.observation
    assert r.info["invalid"] and not (r.terminated or r.truncated or r.won)
    if not start.startswith("Error during execution"):
        assert (
            pickle.loads(env.snapshot()[0][1])[0]["GorillaFileSystem"]
            == pickle.loads(before[0][1])[0]["GorillaFileSystem"]
        )
    assert env.elapsed_steps == 2


def test_calls_return_bfcl_results_and_end_turn_presents_the_next_request() -> None:
    env = _env("multi_turn_base_0")
    r = env.step("cd(folder='document')")
    assert r.observation == '{"current_working_directory": "document"}' and r.info["invalid"] is False
    r = env.step("mkdir(dir_name='temp')")
    assert r.observation == "None"  # what BFCL shows for a function that returns nothing
    env.step("mv(source='final_report.pdf', destination='temp')")
    r = env.step(END_TURN)
    assert r.observation.startswith("User: Perform a detailed search using grep")
    assert r.info["turn"] == 1 and r.info["failure"] == "" and not r.terminated


def test_miss_func_withholds_functions_until_their_turn() -> None:
    env = _env("multi_turn_miss_func_0")  # sort() is withheld until turn 3
    assert "\nsort(" not in env.reset("multi_turn_miss_func_0")[0]
    assert env.step("sort(file_name='x')").observation.startswith("Invalid action: there is no function 'sort'")
    assert not any(c.startswith("sort(") for c in env.candidate_actions())
    env.reset("multi_turn_miss_func_0")
    actions = env.expert_actions()
    for a in actions[: actions.index("sort(file_name='final_report.pdf')")]:
        r = env.step(a)
    assert r.observation.startswith("User: I have updated some more functions")
    assert r.observation.endswith("New functions:\nsort(file_name: str)")
    assert any(c.startswith("sort(") for c in env.candidate_actions())


def test_a_missing_state_change_loses() -> None:
    env = _env("multi_turn_base_0")
    actions = [a for a in env.expert_actions() if a != "mkdir(dir_name='temp')"]
    with pytest.raises(ReplayError, match="does not win"):
        replay(env, "multi_turn_base_0", actions)
    assert env._progress.failure == (
        "turn 0: Model instance for GorillaFileSystem does not match the state with ground truth instance."
    )


def test_a_missing_query_loses_although_the_state_matches() -> None:
    """grep changes no state; BFCL's response check still wants its result (here in turn 1)."""
    env = _env("multi_turn_base_0")
    actions = [a for a in env.expert_actions() if not a.startswith("grep(")]
    with pytest.raises(ReplayError, match="does not win"):
        replay(env, "multi_turn_base_0", actions)
    assert env._progress.failure.startswith("turn 1: Model response execution results so far")


def test_a_turn_without_calls_loses_and_the_episode_still_runs_to_the_end() -> None:
    env = _env("multi_turn_base_1")
    expert = env.expert_actions()
    r = env.step(END_TURN)  # turn 0 asks for ls(a=True)
    assert r.info["failure"] == "turn 0: no function was called" and not r.terminated
    results = [env.step(a) for a in expert[expert.index(END_TURN) + 1 :]]  # the expert's turns 1, 2, ...
    assert results[-1].terminated and not results[-1].won and results[-1].reward == 0.0


def test_truncated_is_not_won_and_the_episode_then_refuses_steps() -> None:
    env = make("bfcl", "train", max_steps=2)
    env.reset("multi_turn_base_0")
    results = [env.step("pwd()") for _ in range(2)]
    assert results[-1].truncated and not results[-1].terminated and not results[-1].won
    with pytest.raises(InvalidInputError, match="reset"):
        env.step("pwd()")


def test_long_context_observations_are_cut() -> None:
    env = make("bfcl", "ood_test", observation_limit=300)
    task = "multi_turn_long_context_104"
    env.reset(task)
    cut = [r.observation for r in (env.step(a) for a in env.expert_actions()) if "[cut: " in r.observation]
    assert cut and all(len(o.split(" ... [cut: ")[0]) == 300 for o in cut)


# -- snapshots and candidates -------------------------------------------------------------------
def test_snapshot_is_not_aliased_and_survives_pickling() -> None:
    env = _env("multi_turn_base_0")
    env.step("cd(folder='document')")
    snap = env.snapshot()
    first = env.step("mkdir(dir_name='temp')").observation
    env.step("cd(folder='temp')")
    env.restore(pickle.loads(pickle.dumps(snap)))
    assert env.step("mkdir(dir_name='temp')").observation == first  # temp did not exist yet
    assert env.step("mkdir(dir_name='temp')").observation.startswith('{"error"')
    env.restore(snap)  # the same snapshot again: untouched by the steps after the first restore
    assert env.step("mkdir(dir_name='temp')").observation == first
    other = make("bfcl", "train")
    other.restore(snap)  # a fresh instance restores without reset
    assert other.step("cd(folder='temp')").observation.startswith('{"error"')


def test_candidates_are_deterministic_sorted_and_all_bind() -> None:
    env = _env("multi_turn_base_100")
    actions = env.expert_actions()
    runnable = total = 0
    for expert_action in actions:
        candidates = env.candidate_actions()
        assert candidates == sorted(set(candidates)) and END_TURN in candidates and env.valid_actions() == []
        assert candidates == env.candidate_actions()
        snap = env.snapshot()
        for c in candidates:
            r = env.step(c)
            total += 1
            runnable += not r.observation.startswith("Invalid action")
            env.restore(snap)
        env.step(expert_action)
    assert env.candidate_actions() == []  # the conversation is over
    assert runnable == total  # every candidate parses and binds (it may still fail inside the function)


def test_every_expert_action_is_at_least_sometimes_a_candidate() -> None:
    """Candidates come from the state, so the expert's own call is often among them (half, here, or more)."""
    hits = total = 0
    env = make("bfcl", "train")
    for task in env.tasks(12):
        env.reset(task)
        for action in env.expert_actions():
            hits += action in env.candidate_actions()
            total += 1
            env.step(action)
    assert hits / total >= 0.5, (hits, total)


def test_all_800_entries_are_loaded() -> None:
    assert len(entries()) == 800


_DIGEST = """
import hashlib
from firsthand import make
h = hashlib.sha256()
for split in ("train", "ood_test"):
    env = make("bfcl", split)
    for task in env.tasks(12):
        h.update(env.reset(task)[0].encode())
        for action in env.expert_actions():
            h.update("|".join(env.candidate_actions()).encode())
            h.update(env.step(action).observation.encode())
print(h.hexdigest())
"""


def test_observations_and_candidates_do_not_depend_on_the_hash_seed() -> None:
    """Sets and hashing must not leak into observations or candidates (branching compares them across runs)."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_math_cannot_stall_the_process_or_leak_precision() -> None:
    import decimal

    import mpmath

    env = _env("multi_turn_base_15")  # GorillaFileSystem and MathAPI
    dps, prec = mpmath.mp.dps, decimal.getcontext().prec
    r = env.step("logarithm(value=2, base=10, precision=10000000)")
    assert r.info["invalid"] and "precision above 1000" in r.observation
    assert env.step("power(base=10, exponent=100000000)").observation.startswith("Invalid action: power(): exponent")
    r = env.step("power(base=10, exponent=5000)")  # computed, but its 5001 digits cannot be printed
    assert r.observation.startswith("Error during execution: Exceeds the limit") and r.info["invalid"]
    r = env.step("logarithm(value=8, base=2, precision=3)")
    assert r.observation == "{'result': mpf('3.00049')}"  # BFCL renders mpmath's value at 3 digits so
    assert env.step("square_root(number=2, precision=3)").observation == "{'result': Decimal('1.41')}"
    assert (mpmath.mp.dps, decimal.getcontext().prec) == (dps, prec)


def test_one_episode_cannot_change_the_next_through_mutable_defaults() -> None:
    """TwitterAPI.post_tweet(mentions=[]) keeps its default list in the tweet and mention() extends it:
    without a copy per call, a mention in one episode showed up in every later tweet of the process."""
    task = "multi_turn_base_8"  # posts a tweet at its 6th step
    env = _env(task)
    actions = env.expert_actions()
    clean = [env.step(a).observation for a in actions]
    env.reset(task)
    for a in actions[:6]:
        env.step(a)
    assert env.step("mention(tweet_id=1, mentioned_usernames=['Anomaly'])").observation.endswith('successfully"}')
    env.reset(task)
    assert [env.step(a).observation for a in actions] == clean
    assert any('"mentions": []' in o for o in clean)  # the tweet as posted, no one mentioned
