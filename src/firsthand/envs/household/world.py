"""Procedural generation of household worlds and tasks, modeled on ALFWorld.

A world is a room of numbered receptacles ("cabinet 3"), some of which open and close, holding
numbered objects ("mug 1"). A task is one of ALFWorld's six task types. Generation is a pure
function of (split, index): the same task identifier always yields the same world.

Splits:
- ``train`` and ``id_test`` come from the same generator with disjoint seed ranges.
- ``ood_test`` only uses (object, destination) pairings that ``train`` and ``id_test`` never use,
  in the spirit of ALFWorld's unseen split: the agent has to generalise to new combinations.
"""

from __future__ import annotations

import functools
import random
import zlib
from dataclasses import dataclass

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place",
    "look_at_obj_in_light",
    "pick_clean_then_place",
    "pick_heat_then_place",
    "pick_cool_then_place",
    "pick_two_obj_and_place",
)

# Receptacle kind -> (openable, (min count, max count)) for each room type.
ROOMS: dict[str, dict[str, tuple[bool, tuple[int, int]]]] = {
    "kitchen": {
        "cabinet": (True, (3, 8)),
        "coffeemachine": (False, (1, 1)),
        "countertop": (False, (1, 3)),
        "diningtable": (False, (0, 1)),
        "drawer": (True, (2, 5)),
        "fridge": (True, (1, 1)),
        "garbagecan": (False, (1, 1)),
        "microwave": (True, (1, 1)),
        "shelf": (False, (0, 3)),
        "sinkbasin": (False, (1, 1)),
        "stoveburner": (False, (2, 4)),
        "toaster": (False, (1, 1)),
    },
    "livingroom": {
        "armchair": (False, (0, 2)),
        "cabinet": (True, (0, 4)),
        "coffeetable": (False, (1, 1)),
        "drawer": (True, (1, 4)),
        "dresser": (False, (0, 1)),
        "garbagecan": (False, (1, 1)),
        "shelf": (False, (1, 4)),
        "sidetable": (False, (1, 2)),
        "sofa": (False, (1, 1)),
        "tvstand": (False, (1, 1)),
    },
    "bedroom": {
        "bed": (False, (1, 1)),
        "desk": (False, (1, 2)),
        "drawer": (True, (2, 6)),
        "dresser": (False, (1, 1)),
        "garbagecan": (False, (1, 1)),
        "laundryhamper": (False, (1, 1)),
        "safe": (True, (0, 1)),
        "shelf": (False, (1, 4)),
        "sidetable": (False, (1, 2)),
    },
    "bathroom": {
        "bathtubbasin": (False, (1, 1)),
        "cabinet": (True, (2, 4)),
        "countertop": (False, (1, 1)),
        "drawer": (True, (0, 4)),
        "garbagecan": (False, (1, 1)),
        "handtowelholder": (False, (1, 1)),
        "shelf": (False, (0, 2)),
        "sinkbasin": (False, (1, 2)),
        "toilet": (False, (1, 1)),
        "toiletpaperhanger": (False, (1, 1)),
        "towelholder": (False, (1, 1)),
    },
}


@dataclass(frozen=True)
class ObjectKind:
    """An object kind: where it is found in a room type, and which transformations apply."""

    spots: tuple[str, ...]
    clean: bool = False
    heat: bool = False
    cool: bool = False


_K = ObjectKind
OBJECTS: dict[str, dict[str, ObjectKind]] = {
    "kitchen": {
        "apple": _K(("countertop", "diningtable", "fridge", "garbagecan", "microwave"), True, True, True),
        "bowl": _K(("cabinet", "countertop", "diningtable", "fridge", "shelf"), True, False, True),
        "bread": _K(("countertop", "diningtable", "fridge"), False, True, True),
        "butterknife": _K(("countertop", "diningtable", "drawer", "sinkbasin"), True),
        "cup": _K(("cabinet", "countertop", "diningtable", "fridge", "microwave", "shelf"), True, True, True),
        "dishsponge": _K(("cabinet", "countertop", "drawer", "sinkbasin"), True),
        "egg": _K(("countertop", "diningtable", "fridge", "garbagecan", "microwave"), True, True, True),
        "fork": _K(("countertop", "diningtable", "drawer", "sinkbasin"), True),
        "kettle": _K(("cabinet", "countertop", "stoveburner"), True),
        "knife": _K(("countertop", "diningtable", "drawer", "sinkbasin"), True),
        "ladle": _K(("countertop", "diningtable", "drawer"), True),
        "lettuce": _K(("countertop", "diningtable", "fridge"), True, False, True),
        "mug": _K(
            ("cabinet", "coffeemachine", "countertop", "diningtable", "microwave", "shelf", "sinkbasin"),
            True,
            True,
            True,
        ),
        "pan": _K(("cabinet", "countertop", "stoveburner"), True, False, True),
        "peppershaker": _K(("cabinet", "countertop", "diningtable", "drawer", "shelf")),
        "plate": _K(("cabinet", "countertop", "diningtable", "fridge", "shelf"), True, True, True),
        "pot": _K(("cabinet", "countertop", "diningtable", "stoveburner"), True, False, True),
        "potato": _K(("countertop", "diningtable", "fridge", "garbagecan", "microwave"), True, True, True),
        "saltshaker": _K(("cabinet", "countertop", "diningtable", "drawer", "shelf")),
        "spatula": _K(("countertop", "diningtable", "drawer", "sinkbasin"), True),
        "spoon": _K(("countertop", "diningtable", "drawer", "sinkbasin"), True),
        "tomato": _K(("countertop", "diningtable", "fridge", "garbagecan", "microwave"), True, True, True),
        "winebottle": _K(("cabinet", "countertop", "diningtable", "fridge"), False, False, True),
    },
    "livingroom": {
        "box": _K(("coffeetable", "dresser", "shelf", "sofa", "tvstand")),
        "creditcard": _K(("armchair", "coffeetable", "drawer", "dresser", "sidetable", "sofa")),
        "keychain": _K(("armchair", "coffeetable", "drawer", "dresser", "sidetable", "sofa")),
        "laptop": _K(("coffeetable", "sidetable", "sofa")),
        "newspaper": _K(("armchair", "coffeetable", "garbagecan", "sidetable", "sofa")),
        "pillow": _K(("armchair", "sofa")),
        "remotecontrol": _K(("armchair", "coffeetable", "drawer", "sidetable", "sofa", "tvstand")),
        "statue": _K(("cabinet", "coffeetable", "dresser", "shelf", "sidetable")),
        "vase": _K(("cabinet", "coffeetable", "shelf", "sidetable", "tvstand")),
        "watch": _K(("coffeetable", "drawer", "dresser", "sidetable")),
    },
    "bedroom": {
        "alarmclock": _K(("desk", "dresser", "shelf", "sidetable")),
        "book": _K(("bed", "desk", "drawer", "dresser", "shelf", "sidetable")),
        "cd": _K(("desk", "drawer", "garbagecan", "safe", "shelf", "sidetable")),
        "cellphone": _K(("bed", "desk", "drawer", "dresser", "sidetable")),
        "creditcard": _K(("desk", "drawer", "dresser", "safe", "shelf")),
        "keychain": _K(("desk", "drawer", "dresser", "safe", "sidetable")),
        "laptop": _K(("bed", "desk")),
        "pen": _K(("desk", "drawer", "shelf", "sidetable")),
        "pencil": _K(("desk", "drawer", "shelf", "sidetable")),
        "pillow": _K(("bed",)),
        "teddybear": _K(("bed", "dresser", "shelf")),
    },
    "bathroom": {
        "candle": _K(("cabinet", "countertop", "shelf", "toilet")),
        "cloth": _K(("bathtubbasin", "cabinet", "countertop", "drawer", "sinkbasin", "toilet"), True),
        "dishsponge": _K(("cabinet", "countertop", "sinkbasin", "toilet"), True),
        "handtowel": _K(("countertop", "handtowelholder")),
        "soapbar": _K(("bathtubbasin", "cabinet", "countertop", "sinkbasin", "toilet"), True),
        "soapbottle": _K(("cabinet", "countertop", "garbagecan", "toilet")),
        "spraybottle": _K(("cabinet", "countertop", "garbagecan", "toilet")),
        "tissuebox": _K(("cabinet", "countertop", "shelf", "toilet")),
        "toiletpaper": _K(("cabinet", "countertop", "drawer", "toilet", "toiletpaperhanger")),
        "towel": _K(("countertop", "towelholder")),
    },
}

# Where each task type can happen, and which appliance (receptacle kind) it needs.
TASK_ROOMS: dict[str, tuple[str, ...]] = {
    "pick_and_place": ("kitchen", "livingroom", "bedroom", "bathroom"),
    "look_at_obj_in_light": ("livingroom", "bedroom"),
    "pick_clean_then_place": ("kitchen", "bathroom"),
    "pick_heat_then_place": ("kitchen",),
    "pick_cool_then_place": ("kitchen",),
    "pick_two_obj_and_place": ("kitchen", "livingroom", "bedroom", "bathroom"),
}
APPLIANCE: dict[str, str] = {
    "pick_clean_then_place": "sinkbasin",
    "pick_heat_then_place": "microwave",
    "pick_cool_then_place": "fridge",
}
TRANSFORM: dict[str, str] = {
    "pick_clean_then_place": "clean",
    "pick_heat_then_place": "heat",
    "pick_cool_then_place": "cool",
}
LAMP_SPOTS: tuple[str, ...] = ("desk", "dresser", "sidetable")
HABIT = 0.1
"""How strongly task objects (and the desk lamp) follow habits: spot i of a kind's list (and receptacle
number i + 1) has weight HABIT**i. With 0.1 the likeliest receptacle is where the expert goes first in
85% of id_test tasks (0.3: 64%; measured on 600 tasks), so a policy can learn where to look, and the
expert, which knows where things are, can mostly be imitated; the rest of the time the object is
elsewhere and the agent has to search, which no demonstration shows."""
LAMP = "desklamp"


@dataclass(frozen=True)
class Difficulty:
    """How hard a household world is: the adapter's arguments (`household:receptacles=2:habit=0.5`), so a
    harder split is named on the command line and recorded in every manifest with the environment's name.
    The defaults generate the worlds every earlier result was measured on."""

    novel_objects: bool = False
    """Keep the goal kinds of `novel_goal` out of the goals of train, id_test and ood_test, and make them the
    goals of the split novel_test: objects the expert never takes in training, which training text names only
    in observations (those of alternatives, which world-model targets hold, and the expert's own)."""
    receptacles: float = 1.0
    """Scale of the count of every receptacle kind a room can hold several of (cabinets, drawers, shelves):
    2.0 doubles them, so there are more places to search; kinds a room has one of (a fridge) stay one."""
    habit: float = HABIT
    """How strongly objects keep to their usual places (`HABIT`): 0.1 puts them at the likeliest spot most
    of the time, 1.0 anywhere their kind can be, so where to look is no longer learnable from demonstrations."""

    def __post_init__(self) -> None:
        if not 0 < self.receptacles <= 4:
            raise ValueError(f"receptacles must be above 0 and at most 4, got {self.receptacles!r}")
        if not 0 < self.habit <= 1:
            raise ValueError(f"habit must be above 0 and at most 1, got {self.habit!r}")

    def counts(self, lo: int, hi: int) -> tuple[int, int]:
        """A receptacle kind's (min, max) count in a room at this scale."""
        if hi <= 1 or self.receptacles == 1.0:
            return lo, hi
        return round(lo * self.receptacles), max(1, round(hi * self.receptacles))


STANDARD = Difficulty()

GOAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick_and_place": ("put a {o} in {r}.", "put some {o} on {r}."),
    "look_at_obj_in_light": ("look at {o} under the desklamp.", "examine the {o} with the desklamp."),
    "pick_clean_then_place": ("put a clean {o} in {r}.", "clean some {o} and put it in {r}."),
    "pick_heat_then_place": ("put a hot {o} in {r}.", "heat some {o} and put it in {r}."),
    "pick_cool_then_place": ("put a cool {o} in {r}.", "cool some {o} and put it in {r}."),
    "pick_two_obj_and_place": ("put two {o} in {r}.", "find two {o} and put them in {r}."),
}

NOVEL_TEST = "novel_test"
"""The split of goal objects no expert target names in training (with ``household:novel_objects=true``)."""
SPLIT_SEED_BASE: dict[str, int] = {
    "train": 0,
    "id_test": 1_000_000_000,
    "ood_test": 2_000_000_000,
    NOVEL_TEST: 3_000_000_000,
}
SPLIT_SIZE: dict[str, int] = {"train": 20_000, "id_test": 2_000, "ood_test": 2_000, NOVEL_TEST: 2_000}


def novel_goal(obj_kind: str) -> bool:
    """True for the object kinds novel_test has as goals (8 of 49: cellphone, dishsponge, fork, laptop, mug,
    pencil, spraybottle, tissuebox): a fixed hash, so it never changes between runs or machines."""
    return zlib.crc32(f"novel|{obj_kind}".encode()) % 4 == 0


def held_out(obj_kind: str, destination: str) -> bool:
    """True for the (object, destination) pairings reserved for ``ood_test`` (about one in four).

    The destination is a receptacle kind, or "desklamp" for the light task. The choice is a fixed
    hash, so it never changes between runs or machines.
    """
    return zlib.crc32(f"{obj_kind}|{destination}".encode()) % 4 == 0


@dataclass(frozen=True)
class Task:
    """The static part of a generated world: layout, initial placement and goal."""

    task_id: str
    room: str
    task_type: str
    obj_kind: str
    destination: str  # a receptacle kind, or "desklamp" for look_at_obj_in_light
    goal: str
    receptacles: tuple[str, ...]  # "cabinet 1", ... in the order the room lists them
    openable: frozenset[str]
    placement: tuple[tuple[str, str], ...]  # (object, receptacle) at the start


@functools.cache
def kind_of(name: str) -> str:
    """ "cabinet 3" -> "cabinet"."""
    return name.rsplit(" ", 1)[0]


def _candidates(
    room: str, task_type: str, present: set[str], split: str, novel_objects: bool = False
) -> list[tuple[str, str]]:
    """The (object kind, destination) pairs this task type allows in a room with these receptacles."""
    pairs: list[tuple[str, str]] = []
    for obj, kind in OBJECTS[room].items():
        if not any(s in present for s in kind.spots):
            continue
        if novel_objects and novel_goal(obj) != (split == NOVEL_TEST):
            continue
        transform = TRANSFORM.get(task_type)
        if transform and not getattr(kind, transform):
            continue
        if task_type == "look_at_obj_in_light":
            destinations = [LAMP]
        else:
            destinations = [s for s in kind.spots if s in present and s != APPLIANCE.get(task_type)]
            # The object must be findable somewhere other than the destination kind.
            destinations = [d for d in destinations if any(s != d and s in present for s in kind.spots)]
        for dest in destinations:
            if split == NOVEL_TEST or held_out(obj, dest) == (split == "ood_test"):
                pairs.append((obj, dest))
    return pairs


@functools.lru_cache(maxsize=4096)
def generate(split: str, index: int, difficulty: Difficulty = STANDARD) -> Task:
    """Generate task `index` of `split` deterministically (for a `difficulty`)."""
    rng = random.Random(SPLIT_SEED_BASE[split] + index)
    task_type = TASK_TYPES[index % len(TASK_TYPES)] if split != "train" else rng.choice(TASK_TYPES)
    for _ in range(1000):
        room = rng.choice(TASK_ROOMS[task_type])
        receptacles: list[str] = []
        openable: set[str] = set()
        for kind, (opens, (lo, hi)) in ROOMS[room].items():
            count = rng.randint(*difficulty.counts(lo, hi))
            if task_type == "look_at_obj_in_light" and kind in LAMP_SPOTS and count == 0:
                count = 1
            for i in range(1, count + 1):
                receptacles.append(f"{kind} {i}")
                if opens:
                    openable.add(f"{kind} {i}")
        present = {kind_of(r) for r in receptacles}
        if task_type == "look_at_obj_in_light" and not present & set(LAMP_SPOTS):
            continue
        pairs = _candidates(room, task_type, present, split, difficulty.novel_objects)
        if pairs:
            break
    else:  # pragma: no cover - the tables guarantee candidates; this guards table edits
        raise RuntimeError(f"could not generate a {task_type!r} task for split {split!r}")

    obj_kind, destination = rng.choice(pairs)
    goal = rng.choice(GOAL_TEMPLATES[task_type]).format(o=obj_kind, r=destination)
    by_kind: dict[str, list[str]] = {}
    for r in receptacles:
        by_kind.setdefault(kind_of(r), []).append(r)

    placement: list[tuple[str, str]] = []
    counters: dict[str, int] = {}

    def place(kind: str, spots: list[str]) -> None:
        counters[kind] = counters.get(kind, 0) + 1
        placement.append((f"{kind} {counters[kind]}", rng.choice(spots)))

    # Task objects: never already at the destination, so no task starts solved. Households follow habits:
    # an object kind is usually at its first listed spot, and lower-numbered receptacles are preferred.
    kinds = [k for k in OBJECTS[room][obj_kind].spots if k in by_kind and k != destination]
    needed = 2 if task_type == "pick_two_obj_and_place" else 1
    for _ in range(needed + rng.randint(0, 1)):
        kind = rng.choices(kinds, weights=[difficulty.habit**i for i in range(len(kinds))])[0]
        instances = by_kind[kind]
        place(obj_kind, [rng.choices(instances, weights=[difficulty.habit**i for i in range(len(instances))])[0]])
    if task_type == "look_at_obj_in_light" or (room in ("livingroom", "bedroom") and rng.random() < 0.5):
        lamp_spots = [r for k in LAMP_SPOTS for r in by_kind.get(k, [])]
        lamp = rng.choices(lamp_spots, weights=[difficulty.habit**i for i in range(len(lamp_spots))])[0]
        place(LAMP, [lamp])
    # Distractors: other objects of the room at their usual spots.
    others = [o for o in OBJECTS[room] if o != obj_kind]
    for _ in range(rng.randint(4, 10)):
        other = rng.choice(others)
        other_spots = [r for r in receptacles if kind_of(r) in OBJECTS[room][other].spots]
        if other_spots:
            place(other, other_spots)
    return Task(
        task_id=f"{split}-{index}",
        room=room,
        task_type=task_type,
        obj_kind=obj_kind,
        destination=destination,
        goal=goal,
        receptacles=tuple(receptacles),
        openable=frozenset(openable),
        placement=tuple(placement),
    )
