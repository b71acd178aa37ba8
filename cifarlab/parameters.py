"""A notebook's parameters, checked in the cell after its parameters cell - before any work.

papermill injects the values it is given in a cell after the parameters cell, and a person edits the
cell by hand: either way a wrong value - a misspelt name (``POOLNG``), a word where a flag goes
(``LIVE="maybe"``), a number where a folder goes (``OUT=5``), a list that names nothing - is one line
there, naming the parameter, before any data loads. Values go through the config's own coercion
(``"yes"`` -> True, ``"3"`` -> 3); paths are expanded (``~``, relative to the working folder).

    check_parameters("01_train", globals())    # each parameter replaced by its checked value
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from .classes import select_classes
from .config import ConfigError, coerce
from .errors import CifarlabError
from .files import user_path
from .sweep import SweepError, plan_runs


class ParameterError(CifarlabError, ValueError):
    """A notebook parameter with a value it cannot take, or a name the notebook does not know."""


def _path(name, v, optional=False):
    if v is None and optional:
        return None
    if not isinstance(v, (str, Path)) or str(v).strip() == "":
        raise ParameterError(f"{name}={v!r} is not allowed: expected a folder path (a string)"
                             + (", or None" if optional else ""))
    return str(user_path(v, name))


def _classes(name, v, optional=False):
    try:
        return None if v is None and optional else list(select_classes(v).ids)
    except CifarlabError as e:
        raise ParameterError(f"{name}: {e}") from None


def _experiment(name, v):
    if v is not None and not isinstance(v, (str, list, tuple)):
        raise ParameterError(f"{name}={v!r} is not allowed: expected an experiment's name or classes, or None")
    return v


_DATA_DIR = lambda name, v: _path(name, v, optional=True)
_FLAG = lambda name, v: coerce(name, v, bool)
_PLANNED = lambda name, v: v     # checked with the grid's configs by plan_runs below (as make's and sweeps' are)
# Each notebook's parameters (the names in its parameters cell) and how each is checked.
SPECS = {
    "00_pick_classes": {"CLASSES": _classes, "DATA_DIR": _DATA_DIR},
    "01_train": {"CLASSES": _classes, "MODELS": _PLANNED, "POOLINGS": _PLANNED, "SEEDS": _PLANNED,
                 "EPOCHS": _PLANNED, "TEMPLATE_EPOCHS": _PLANNED, "OVERRIDES": _PLANNED,
                 "OUT": _path, "DATA_DIR": _DATA_DIR, "LIVE": _FLAG, "USE_PICKER": _FLAG, "FORCE": _FLAG,
                 "TRAIN_MY_NET": _FLAG},
    # BEST=None: compare only, nothing saved (as compare_and_save(best=None) and the CLI without --best)
    "02_compare": {"RUNS": _path, "BEST": _DATA_DIR, "EXPERIMENT": _experiment, "DATA_DIR": _DATA_DIR},
    "03_reload": {"BEST": _path, "DATA_DIR": _DATA_DIR,
                  "EXPECT_CLASSES": lambda name, v: _classes(name, v, optional=True)},
    "04_across_subsets": {"RUNS": _path},
}
NOT_PARAMETERS = {"REPO_URL"}       # the setup cell's


def check_parameters(notebook: str, namespace: dict) -> None:
    """Check every parameter of ``notebook`` in ``namespace`` (its ``globals()``) and replace each there by its
    checked value; any ALL_CAPS name the notebook does not know is a misspelt parameter.
    Raises :class:`ParameterError` (one line) at the first mistake."""
    spec = SPECS[notebook]
    unknown = sorted(n for n in namespace if re.fullmatch(r"[A-Z][A-Z0-9_]*", n) and n not in spec
                     and n not in NOT_PARAMETERS)
    if unknown:
        hints = [f"{n}" + "".join(f" (did you mean {c}?)" for c in difflib.get_close_matches(n, spec, n=1))
                 for n in unknown]
        raise ParameterError(f"{notebook} has no parameter {', '.join(hints)}; its parameters: {', '.join(spec)}")
    missing = [n for n in spec if n not in namespace]
    if missing:
        raise ParameterError(f"{notebook}: parameter {', '.join(missing)} is not set: run its parameters cell first")
    try:
        checked = {n: check(n, namespace[n]) for n, check in spec.items()}
    except ConfigError as e:       # the config's coercion: its message names the parameter
        raise ParameterError(str(e)) from None
    try:
        if notebook == "01_train":     # the grid itself: MODELS, POOLINGS, SEEDS, OVERRIDES and every run's config
            plan_runs(checked["CLASSES"], checked["MODELS"], checked["POOLINGS"], checked["SEEDS"],
                      checked["EPOCHS"], checked["TEMPLATE_EPOCHS"], checked["OVERRIDES"])
        if notebook == "02_compare" and checked["BEST"] is not None:
            from .export import check_best_target
            check_best_target(checked["BEST"])
    except CifarlabError as e:
        # a config field refused (naming no parameter) is OVERRIDES' doing; an own net's file error names the file
        blame = (checked.get("OVERRIDES") and isinstance(e, ConfigError | SweepError)
                 and not str(e).startswith(tuple(spec)))
        raise ParameterError(f"OVERRIDES={checked['OVERRIDES']!r}: {e}" if blame else str(e)) from None
    namespace.update(checked)
