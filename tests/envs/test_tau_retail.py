"""Tau-Bench retail: the package's tools and tasks behind the contract, with the scripted customer."""

from __future__ import annotations

import pickle

import pytest

from firsthand import InvalidInputError, make
from firsthand.envs.tau_retail import END, TauRetailEnv, _base, _digest, _pristine, split_tasks
from firsthand.testing import EnvContract


class TestTauRetailContract(EnvContract):
    env_name = "tau-retail"


@pytest.fixture
def env() -> TauRetailEnv:
    e = make("tau-retail", "train")
    assert isinstance(e, TauRetailEnv)
    return e


def test_splits_are_the_packages_with_every_fourth_train_task_held_out() -> None:
    train, held, test = (set(split_tasks(s)) for s in ("train", "id_test", "ood_test"))
    assert (len(train), len(held), len(test)) == (56, 18, 40)
    assert not (train & held) and not (train & test) and not (held & test)


@pytest.mark.parametrize("split", ["train", "id_test", "ood_test"])
def test_the_ground_truth_wins_every_task(split: str) -> None:
    env = make("tau-retail", split)
    for task in env.tasks():
        env.reset(task)
        for action in env.expert_actions():
            result = env.step(action)
        assert result.won and result.terminated, task
    # episodes read one pristine database until they write: no call of theirs changed it
    assert _digest(_pristine()) == _digest(pickle.loads(_base()))


def test_an_episode_copies_the_database_at_its_first_write_only(env: TauRetailEnv) -> None:
    env.reset(env.tasks(1)[0])
    env.step("get_order_details(order_id='#W2378156')")
    env.step("find_user_id_by_name_zip(first_name='Yusuf', last_name='Rossi', zip='19122')")
    read_only = env.snapshot()
    assert env._db is None and len(pickle.dumps(read_only)) < 50_000  # no database in the snapshot
    env.step("cancel_pending_order(order_id='#W2378156', reason='no longer needed')")  # refused: delivered
    env.step(
        "modify_user_address(user_id='yusuf_rossi_9620', address1='1 Main St', address2='', city='X', "
        "state='CA', country='USA', zip='90001')"
    )
    assert env._db is not None and env._db["users"]["yusuf_rossi_9620"]["address"]["city"] == "X"
    assert _pristine()["users"]["yusuf_rossi_9620"]["address"]["city"] != "X"
    env.restore(read_only)
    assert env._db is None


def test_a_wrong_write_or_an_early_end_loses(env: TauRetailEnv) -> None:
    task = env.tasks(1)[0]  # an exchange of two items of order #W2378156
    env.reset(task)
    expert = env.expert_actions()
    for action in expert[:-2]:
        env.step(action)
    assert env.step(END).won is False  # the exchange was never made: the database differs
    env.reset(task)
    for action in expert[:-2]:
        env.step(action)
    result = env.step("cancel_pending_order(order_id='#W2378156', reason='no longer needed')")
    assert result.info["invalid"] and result.observation.startswith("Error:")  # delivered: refused by the tool


def test_required_information_must_be_said() -> None:
    env = make("tau-retail", "train")
    task = next(t for t in env.tasks() if env.reset(t) and any(a.startswith("respond(") for a in env.expert_actions()))
    env.reset(task)
    expert = env.expert_actions()
    for action in expert:
        if not action.startswith("respond("):
            result = env.step(action)
    assert result.terminated and not result.won  # the database is right, the customer was not told


def test_bad_actions_are_invalid_steps_not_errors(env: TauRetailEnv) -> None:
    env.reset(env.tasks(1)[0])
    for action in ["hello", "get_order_details('#W2378156')", "fly(to='moon')", "respond(42)"]:
        result = env.step(action)
        assert result.info["invalid"] and not result.terminated, action
        assert result.observation.startswith("Invalid action"), result.observation
    reply = env.step("respond(message='May I have your name?')")
    assert not reply.info["invalid"] and reply.observation.startswith("Customer: You are Yusuf Rossi")
    with pytest.raises(InvalidInputError, match="unknown tau-retail task 'nope'"):
        env.reset("nope")


def test_a_snapshot_keeps_the_database_apart_from_later_writes(env: TauRetailEnv) -> None:
    task = env.tasks(1)[0]
    env.reset(task)
    expert = env.expert_actions()
    for action in expert[:-2]:
        env.step(action)
    before = env.snapshot()
    assert not env.step(expert[-2]).info["invalid"]  # the exchange, written to the database
    again = env.step(expert[-2])
    assert again.info["invalid"]  # the order is no longer delivered-and-unchanged: refused
    env.restore(before)
    assert not env.step(expert[-2]).info["invalid"]  # back before the exchange
    assert env.step(END).won
    env.reset(task)  # a new episode starts from the untouched database
    for action in expert:
        result = env.step(action)
    assert result.won


def test_candidates_name_what_the_conversation_showed(env: TauRetailEnv) -> None:
    env.reset(env.tasks(1)[0])
    first = env.candidate_actions()
    assert "get_order_details(order_id='#W2378156')" in first and END in first
    env.step(env.expert_actions()[0])  # find_user_id_by_name_zip: the user id appears
    assert "get_user_details(user_id='yusuf_rossi_9620')" in env.candidate_actions()


def test_the_customer_is_any_callable_of_the_conversation() -> None:
    """The adapter takes its customer as a function (messages -> reply) and imports no model code."""
    import ast
    import inspect

    from firsthand.envs import tau_retail

    imported = {n.module for n in ast.walk(ast.parse(inspect.getsource(tau_retail))) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith(("firsthand.inference", "firsthand.models"))}
    heard: list[list[dict[str, str]]] = []
    env = TauRetailEnv("train", customer=lambda messages: heard.append(messages) or "Customer: My email is a@b.c.")
    env.reset(env.tasks(1)[0])
    assert env.step("respond(message='Your email, please?')").observation == "Customer: My email is a@b.c."
    assert [m["role"] for m in heard[0]] == ["system", "user", "assistant", "user"]
    assert heard[0][-1]["content"] == "Your email, please?"
    assert make("tau-retail", "train").customer is None  # the scripted customer


def test_a_model_plays_the_customer_from_the_whole_scenario() -> None:
    """`user=smollm2-135m`: SmolLM2 answers the agent (greedily: a restored snapshot answers the same way)."""
    from firsthand.inference.customer import ModelCustomer

    env = make("tau-retail:user=smollm2-135m", "train")
    assert isinstance(env, TauRetailEnv) and isinstance(env.customer, ModelCustomer)
    assert env.customer.model == "smollm2-135m"
    task = env.tasks(1)[0]
    opening, _ = env.reset(task)
    assert opening.startswith("Customer: You received your order #W2378156")  # the customer speaks first
    saved = env.snapshot()
    question = "respond(message='Could you give me your email address, please?')"
    answer = env.step(question).observation
    assert answer.startswith("Customer: ") and len(answer) > len("Customer: ")
    assert "Yes, please go ahead." not in answer  # not the scripted customer's line
    env.restore(saved)
    assert env.step(question).observation == answer
    heard: list[list[dict[str, str]]] = []
    model = env.customer
    env.customer = lambda messages: heard.append(messages) or model(messages)
    env.step("get_order_details(order_id='#W2378156')")  # a tool call: the customer does not see it
    env.step("respond(message='Thanks. Which keyboard would you like?')")
    roles = [m["role"] for m in heard[0]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]  # the roles turned round
    assert "You do not remember your email address." in heard[0][0]["content"]  # the whole scenario
    assert heard[0][2]["content"] == opening.removeprefix("Customer: ")
    assert heard[0][3]["content"] == "Could you give me your email address, please?"
    assert heard[0][4]["content"] == answer.removeprefix("Customer: ")
    assert heard[0][5]["content"] == "Thanks. Which keyboard would you like?"
    assert not any('#W2378156"' in m["content"] for m in heard[0])  # no tool result
    env.reset(task)
    for action in env.expert_actions():  # the ground truth still wins: its calls do not depend on the answers
        result = env.step(action)
    assert result.won
