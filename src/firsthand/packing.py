"""Shared-prefix packing: records that begin with the same tokens train as one sequence, the prefix once.

A state's K + 1 world-model records differ only from the action on: packed, the state's prompt is processed
once and each record's own tokens attend to it and to themselves only (a block attention mask, positions
continuing from the prefix). Every label is predicted from exactly the context it has unpacked, so losses
and gradients are those of the unpacked records (tests/test_packing.py checks both).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

PAD_SEGMENT = -1
"""The segment id of padding: attends to itself only (a row with nothing to attend to would give NaN)."""


def pack(
    rows: Sequence[dict[str, Any]], groups: Sequence[Hashable], max_length: int | None = None
) -> list[dict[str, Any]]:
    """Tokenized rows (``input_ids`` and ``labels``, -100 off the completion, as TRL prepares them) packed by
    group: the rows of one group share their longest common token prefix, which ends at least one token before any row's
    completion, so each row's first label is still predicted from its own last prompt token. A pack holds
    ``input_ids``, ``labels``, ``position_ids`` and ``segment_ids`` (0: the shared prefix; 1, 2, ...:
    each row's own tokens) and ``records`` (how many rows it holds). `max_length` bounds a pack's tokens:
    a group too long for one pack is split. Groups keep the order of their first row."""
    by_group: dict[Hashable, list[dict[str, Any]]] = {}
    for row, key in zip(rows, groups, strict=True):
        by_group.setdefault(key, []).append(row)
    packs: list[dict[str, Any]] = []
    for members in by_group.values():
        chunk: list[dict[str, Any]] = []
        for row in members:
            if chunk and max_length is not None and _length([*chunk, row]) > max_length:
                packs.append(_packed(chunk))
                chunk = []
            chunk.append(row)
        packs.append(_packed(chunk))
    return packs


def _shared(rows: Sequence[dict[str, Any]]) -> int:
    """Tokens the rows share: their common prefix, up to one token before the first completion token of any."""
    if len(rows) < 2:
        return 0
    first = rows[0]["input_ids"]
    common = min(len(r["input_ids"]) for r in rows)
    for row in rows[1:]:
        ids = row["input_ids"]
        common = next((i for i in range(common) if ids[i] != first[i]), common)
    starts = [next((i for i, label in enumerate(r["labels"]) if label != -100), len(r["labels"])) for r in rows]
    return max(0, min(common, min(starts) - 1))


def _length(rows: Sequence[dict[str, Any]]) -> int:
    shared = _shared(rows)
    return shared + sum(len(r["input_ids"]) - shared for r in rows)


def _packed(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    shared = _shared(rows)
    head = rows[0]
    ids, labels = list(head["input_ids"][:shared]), list(head["labels"][:shared])
    positions, segments = list(range(shared)), [0] * shared
    for segment, row in enumerate(rows, start=1):
        rest = len(row["input_ids"]) - shared
        ids += row["input_ids"][shared:]
        labels += row["labels"][shared:]
        positions += range(shared, shared + rest)
        segments += [segment] * rest
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "segment_ids": segments,
        "records": len(rows),
    }


def collate_packs(packs: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-padded tensors of packs: input_ids, labels (-100 off the completion and on padding), the 2D
    padding mask (the Trainer counts tokens by it), position_ids and segment_ids (padding: `PAD_SEGMENT`)."""
    import torch

    width = max(len(p["input_ids"]) for p in packs)

    def padded(key: str, fill: int) -> Any:
        return torch.tensor([list(p[key]) + [fill] * (width - len(p[key])) for p in packs])

    segments = padded("segment_ids", PAD_SEGMENT)
    return {
        "input_ids": padded("input_ids", pad_token_id),
        "labels": padded("labels", -100),
        "attention_mask": (segments != PAD_SEGMENT).long(),
        "position_ids": padded("position_ids", 0),
        "segment_ids": segments,
    }


def block_mask(segment_ids: Any) -> Any:
    """The [B, 1, T, T] boolean attention mask of packed rows: causal, and a token of segment s > 0 sees the
    shared prefix (segment 0) and its own segment only; padding sees itself."""
    import torch

    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    visible = ((key == 0) | (key == query)) & (key != PAD_SEGMENT) & causal
    eye = torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    return (visible | eye)[:, None]
