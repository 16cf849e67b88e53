"""Shared-prefix packing: the same loss and gradients as the unpacked records, on real world-model data."""

from __future__ import annotations

from pathlib import Path

import pytest

from firsthand.artifacts import load_records
from firsthand.models import TinyConfig, create_tiny
from firsthand.packing import PAD_SEGMENT, block_mask, collate_packs, pack
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import build
from firsthand.stages.collect import collect


def _row(ids: list[int], completion_from: int) -> dict:
    return {"input_ids": ids, "labels": [t if i >= completion_from else -100 for i, t in enumerate(ids)]}


def test_rows_of_a_group_share_their_prefix_up_to_a_token_before_any_completion() -> None:
    a = _row([1, 2, 3, 4, 9, 9], 4)  # prompt 1 2 3 4, completion 9 9
    b = _row([1, 2, 3, 5, 8], 4)  # differs from the 4th token
    c = _row([1, 2, 3, 4, 7], 4)  # the whole prompt in common with a: one prompt token stays its own
    packs = pack([a, b, c, _row([6, 6], 1)], ["s", "s", "s", "t"])
    assert len(packs) == 2 and packs[0]["records"] == 3 and packs[1]["records"] == 1
    first = packs[0]
    assert first["input_ids"] == [1, 2, 3, 4, 9, 9, 5, 8, 4, 7]
    assert first["segment_ids"] == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert first["position_ids"] == [0, 1, 2, 3, 4, 5, 3, 4, 3, 4]
    assert first["labels"] == [-100, -100, -100, -100, 9, 9, -100, 8, -100, 7]
    assert packs[1]["segment_ids"] == [1, 1]  # a single row: nothing shared
    split = pack([a, b, c], ["s"] * 3, max_length=8)  # too long for one pack: split, each pack still shares
    assert [p["records"] for p in split] == [2, 1] and len(split[0]["input_ids"]) == 8


def test_the_block_mask_sees_the_prefix_and_the_own_segment_only() -> None:
    batch = collate_packs(pack([_row([1, 2, 3], 2), _row([1, 2, 4], 2)], ["s", "s"]), pad_token_id=0)
    mask = block_mask(batch["segment_ids"])[0, 0].int().tolist()
    # tokens: 1 2 | 3 (segment 1) | 2 4 (segment 2)
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 1, 1]]
    padded = collate_packs(
        [{**_row([5], 0), "position_ids": [0], "segment_ids": [1]}, *pack([_row([1, 2], 1)], ["x"])], 0
    )
    assert padded["segment_ids"][0].tolist() == [1, PAD_SEGMENT] and padded["attention_mask"][0].tolist() == [1, 0]
    assert block_mask(padded["segment_ids"])[0, 0, 1].tolist() == [False, True]  # padding sees itself only


@pytest.fixture(scope="module")
def iwm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("packing")
    collect("household", "train", 3, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=4))
    build("iwm", root / "branches", root / "iwm")
    records = load_records(root / "iwm")
    texts = (r["prompt"] + r["completion"] for r in records)
    base = create_tiny(texts, root / "base", TinyConfig(hidden_size=64, intermediate_size=128, layers=2, heads=2))
    return base, records


def test_packed_records_have_the_loss_and_gradients_of_the_unpacked(
    iwm: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    """TRL tokenizes the records; the unpacked batch goes through TRL's collator, the packed one through
    `collate_packs`, both through the training loss: equal value and gradient, fewer tokens."""
    import torch
    from datasets import Dataset

    from firsthand.models import load
    from firsthand.stages.train import (
        TrainConfig,
        _conversational,
        _state,
        completion_loss,
        completion_trainer,
        sft_config,
    )

    base, records = iwm
    states = sorted({_state(r) for r in records})[:2]
    chosen = [r for r in records if _state(r) in states]  # two states, K + 1 = 5 records each
    results = []
    for packed in (False, True):
        model, tokenizer = load(base, for_training=True)
        trainer = completion_trainer()(
            model=model,
            args=sft_config(TrainConfig(batch_size=len(chosen)), 1, tmp_path / str(packed)),
            train_dataset=Dataset.from_list(_conversational(chosen)),
            processing_class=tokenizer,
        )
        rows = [trainer.train_dataset[i] for i in range(len(chosen))]
        if packed:
            packs = pack(rows, [_state(r) for r in chosen])
            assert len(packs) == 2 and sum(p["records"] for p in packs) == len(chosen)
            batch = collate_packs(packs, tokenizer.pad_token_id)
        else:
            batch = trainer.data_collator(rows)
        model.train()
        loss, _ = completion_loss(model, dict(batch))
        loss.backward()
        tokens = int(batch["attention_mask"].sum())
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()], tokens))
    (loss, grads, tokens), (packed_loss, packed_grads, packed_tokens) = results
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(grads, packed_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert packed_tokens < 0.5 * tokens  # the state's prompt once instead of five times


@pytest.mark.slow
def test_a_packed_world_model_stage_trains_a_state_a_record(iwm: tuple[Path, list[dict]], tmp_path: Path) -> None:
    from firsthand.stages.train import TrainConfig, _state, train

    base, records = iwm
    root = base.parent
    build("il", root / "branches", root / "il")
    data = {"il": root / "il", "iwm": root / "iwm"}
    results = {}
    for packing in (False, True):
        config = TrainConfig(epochs=1, batch_size=2, budget="paper", packing=packing)
        results[packing] = train("iwm", data, base, tmp_path / str(packing), config)
    plain, packed = results[False]["stages"][0], results[True]["stages"][0]
    states = len({_state(r) for r in records})
    assert packed["packs"] == states and packed["examples"] == plain["examples"] == len(records)
    assert packed["steps"] == -(-states // 2) and plain["steps"] == -(-len(records) // 2)
    assert packed["tokens_per_epoch"] < 0.5 * plain["tokens_per_epoch"]
