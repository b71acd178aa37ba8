"""The CIFAR-100 catalogue as facts, and turning what a user types into a class selection.

Everything here works without the dataset on disk: the names and the fine->coarse mapping
are those of the official `meta` file and the `coarse_labels` of the training set.

A selection accepts fine ids (``58``), fine names (``"pickup truck"``, ``"Pickup_Truck"``),
superclass names (``"vehicles_1"`` expands to its 5 classes), or a mix of them.
Labels are numbered 0..k-1 in ascending fine-id order, like the course template, so the
same set of classes always gets the same label mapping whatever order it was typed in.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

from .errors import CifarlabError

FINE_NAMES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver',  # 0
    'bed', 'bee', 'beetle', 'bicycle', 'bottle',  # 5
    'bowl', 'boy', 'bridge', 'bus', 'butterfly',  # 10
    'camel', 'can', 'castle', 'caterpillar', 'cattle',  # 15
    'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach',  # 20
    'couch', 'crab', 'crocodile', 'cup', 'dinosaur',  # 25
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox',  # 30
    'girl', 'hamster', 'house', 'kangaroo', 'keyboard',  # 35
    'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard',  # 40
    'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',  # 45
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid',  # 50
    'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',  # 55
    'plain', 'plate', 'poppy', 'porcupine', 'possum',  # 60
    'rabbit', 'raccoon', 'ray', 'road', 'rocket',  # 65
    'rose', 'sea', 'seal', 'shark', 'shrew',  # 70
    'skunk', 'skyscraper', 'snail', 'snake', 'spider',  # 75
    'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table',  # 80
    'tank', 'telephone', 'television', 'tiger', 'tractor',  # 85
    'train', 'trout', 'tulip', 'turtle', 'wardrobe',  # 90
    'whale', 'willow_tree', 'wolf', 'woman', 'worm',  # 95
)

COARSE_NAMES = (
    'aquatic_mammals', 'fish', 'flowers',  # 0
    'food_containers', 'fruit_and_vegetables', 'household_electrical_devices',  # 3
    'household_furniture', 'insects', 'large_carnivores',  # 6
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes', 'large_omnivores_and_herbivores',  # 9
    'medium_mammals', 'non-insect_invertebrates', 'people',  # 12
    'reptiles', 'small_mammals', 'trees',  # 15
    'vehicles_1', 'vehicles_2',  # 18
)

# FINE_TO_COARSE[fine_id] is the superclass id of that fine class.
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,  # 0
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,  # 20
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,  # 40
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,  # 60
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,  # 80
)

NUM_FINE = len(FINE_NAMES)
# Training images per fine class in the official split (every class has exactly these many).
TRAIN_PER_CLASS = 500


class ClassSelectionError(CifarlabError, ValueError):
    """What the user typed does not name a valid set of classes; the message says why and what to do."""


def _key(name: str) -> str:
    # "Pickup Truck", "pickup-truck" and "pickup_truck" are the same class.
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


_FINE_BY_KEY = {_key(n): i for i, n in enumerate(FINE_NAMES)}
# Superclass keys keep "man-made" findable with or without its hyphen.
_COARSE_BY_KEY = {_key(n): i for i, n in enumerate(COARSE_NAMES)}


def superclass_members(coarse: int | str) -> tuple[int, ...]:
    """The 5 fine ids of a superclass, given by id or name."""
    cid = coarse if isinstance(coarse, int) else _COARSE_BY_KEY.get(_key(coarse))
    if cid is None or not 0 <= cid < len(COARSE_NAMES):
        raise ClassSelectionError(f"unknown superclass {coarse!r}; valid: {', '.join(COARSE_NAMES)}")
    return tuple(i for i, c in enumerate(FINE_TO_COARSE) if c == cid)


def superclass_of(fine_id: int) -> str:
    return COARSE_NAMES[FINE_TO_COARSE[fine_id]]


@dataclass(frozen=True)
class ClassSelection:
    """A validated set of fine classes. ``ids[label]`` is the fine id behind label index ``label``."""

    ids: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(FINE_NAMES[i] for i in self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict:
        """The recorded mapping: label index -> fine id, name and superclass."""
        return {"ids": list(self.ids), "names": list(self.names),
                "superclasses": [superclass_of(i) for i in self.ids]}

    def __str__(self) -> str:
        return ", ".join(f"{i}:{n}" for i, n in zip(self.ids, self.names))


def _split_spec(spec) -> list:
    """Accept "apple,otter 58", ["apple", 55], (0, 55), a single id/name, or a ClassSelection."""
    if isinstance(spec, ClassSelection):
        return list(spec.ids)
    if isinstance(spec, (int,)) and not isinstance(spec, bool):
        return [spec]
    if isinstance(spec, str) and spec.strip().startswith("[") and spec.strip().endswith("]"):
        spec = spec.strip()[1:-1].replace("'", "").replace('"', "")  # "[0, 55, 58]" from papermill -r
    if isinstance(spec, str):
        # Names never contain commas. Without commas, "pickup truck" is one name if it is one,
        # else the words are separate classes ("apple otter pickup_truck", as make passes them).
        if "," in spec:
            return [p.strip() for p in spec.split(",") if p.strip()]
        if _key(spec) in _FINE_BY_KEY or _key(spec) in _COARSE_BY_KEY:
            return [spec]
        return spec.split()
    if isinstance(spec, Iterable):
        out: list = []
        for item in spec:
            out.extend(_split_spec(item) if not isinstance(item, str) else [item])
        return out
    raise ClassSelectionError(f"cannot read classes from {spec!r}: give ids, names or superclass names")


def _resolve_one(token) -> tuple[int, ...]:
    if hasattr(token, "__index__") and not isinstance(token, (str, bool)):
        token = int(token)
    if isinstance(token, int) or (isinstance(token, str) and token.strip().lstrip("-").isdigit()):
        i = int(token)
        if not 0 <= i < NUM_FINE:
            raise ClassSelectionError(f"class id {i} is outside 0..{NUM_FINE - 1}; CIFAR-100 has fine ids 0..99")
        return (i,)
    if not isinstance(token, str):
        raise ClassSelectionError(f"cannot read class {token!r}: give an id 0..99 or a name")
    key = _key(token)
    if key in _FINE_BY_KEY:
        return (_FINE_BY_KEY[key],)
    if key in _COARSE_BY_KEY:
        return superclass_members(_COARSE_BY_KEY[key])
    candidates = list(_FINE_BY_KEY) + list(_COARSE_BY_KEY)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        "; see cifarlab.classes.FINE_NAMES (or `python -m cifarlab classes`) for the valid names"
    raise ClassSelectionError(f"unknown class name {token!r}{hint}")


def select_classes(spec, min_classes: int = 2) -> ClassSelection:
    """Turn ids / names / superclass names (or a mix) into a :class:`ClassSelection`, or one
    :class:`ClassSelectionError` saying what is wrong (for an unknown name: the closest valid names)."""
    tokens = _split_spec(spec)
    ids: list[int] = []
    for tok in tokens:
        for i in _resolve_one(tok):
            if i in ids:
                raise ClassSelectionError(
                    f"class {i} ({FINE_NAMES[i]}) is given twice (from {tok!r}); list each class once")
            ids.append(i)
    if len(ids) < min_classes:
        raise ClassSelectionError(
            f"need at least {min_classes} classes to train a classifier, got {len(ids)}"
            + (f" ({', '.join(FINE_NAMES[i] for i in ids)})" if ids else "") + "; add more classes")
    return ClassSelection(tuple(sorted(ids)))


def describe_catalogue() -> str:
    """The 100 classes grouped by superclass, one line each (for the CLI and notebooks)."""
    lines = []
    for cid, cname in enumerate(COARSE_NAMES):
        members = superclass_members(cid)
        lines.append(f"{cname:32s} " + ", ".join(f"{i}:{FINE_NAMES[i]}" for i in members))
    return "\n".join(lines)

