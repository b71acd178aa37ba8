"""The class picker: choose CIFAR-100 classes by name and superclass, with real thumbnails.

    picker = ClassPicker([0, 55, 58]); picker          # shows the widget in Jupyter / Colab
    picker.ids, picker.names                           # the selection, as Python lists
    picker.make_command                                # make run-all CLASSES="apple otter pickup_truck"
    picker.notebook_parameter                          # CLASSES = [0, 55, 58]  (for 01_train's parameters cell)
    picker.papermill_yaml                              # -y "CLASSES: [0, 55, 58]"

Built from widgets that exist in ipywidgets 7 and 8, so it works in Colab and classic Jupyter; without a
front end (papermill) it can still be driven from code, and ``print(picker)`` describes the selection.
"""
from __future__ import annotations

import json

import numpy as np

from .classes import COARSE_NAMES, FINE_NAMES, ClassSelectionError, select_classes, superclass_members, superclass_of
from .data import ensure_dataset, full_dataset_on_disk, load_sample, read_split
from .figures import placeholder_png, strip_png

ALL = "(all superclasses)"
THUMBS_PER_CLASS = 8


def _option(i: int) -> tuple[str, int]:
    return f"{i:2d}: {FINE_NAMES[i]}  ({superclass_of(i)})", i


class ClassPicker:
    """An ipywidgets class picker. ``ids``/``names`` always hold the current selection."""

    def __init__(self, initial=(0, 55, 58), data_dir=None):
        import ipywidgets as W

        self.data_dir = data_dir
        self._test_images = None      # read on the first thumbnail shown
        self.thumbnail_sources: dict[int, str] = {}
        self.superclass = W.Dropdown(options=[ALL] + list(COARSE_NAMES), value=ALL, description="superclass")
        self.filter = W.Text(placeholder="type to filter names", description="filter")   # updates as one types
        self.select = W.SelectMultiple(options=[_option(i) for i in range(100)], rows=12,
                                       description="classes", layout=W.Layout(width="420px"))
        self.add_group = W.Button(description="add this superclass", tooltip="select all 5 classes of the superclass")
        self.clear = W.Button(description="clear")
        self.message = W.HTML()
        self.command = W.HTML()
        self.gallery = W.VBox()
        self._ids: list[int] = []
        self.superclass.observe(self._refilter, names="value")
        self.filter.observe(self._refilter, names="value")
        self.select.observe(self._on_select, names="value")
        self.add_group.on_click(self._on_add_group)
        self.clear.on_click(lambda _: self.set_classes([]))
        self.widget = W.VBox([
            W.HBox([self.superclass, self.filter]),
            W.HBox([self.select, W.VBox([self.add_group, self.clear])]),
            self.message, self.command, self.gallery])
        self.set_classes(initial)

    # --- the selection -------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return sorted(self._ids)

    @property
    def names(self) -> list[str]:
        return [FINE_NAMES[i] for i in self.ids]

    @property
    def valid(self) -> bool:
        return len(self._ids) >= 2

    @property
    def make_command(self) -> str:
        return f'make run-all CLASSES="{" ".join(self.names)}"'

    @property
    def notebook_parameter(self) -> str:
        return f"CLASSES = {self.ids}"

    @property
    def papermill_yaml(self) -> str:
        return f'-y "CLASSES: {json.dumps(self.ids)}"'

    def set_classes(self, spec) -> None:
        """Select exactly these classes (ids, names, superclasses). Unknown names raise
        :class:`ClassSelectionError` with the data layer's message; nothing changes then."""
        self._ids = list(select_classes(spec, min_classes=0).ids) if spec not in (None, [], ()) else []
        self._refilter()
        self._update()

    # --- callbacks -------------------------------------------------------------------------
    def _visible(self) -> list[int]:
        sc = self.superclass.value
        members = range(100) if sc == ALL else superclass_members(sc)
        text = self.filter.value.strip().lower().replace(" ", "_")
        shown = [i for i in members if text in FINE_NAMES[i]]
        # Selected classes stay listed (and selected) whatever the filter says, and come FIRST: the list
        # shows 12 rows of up to 100, so a selection further down would be out of view and look unselected.
        chosen = self.ids
        return chosen + [i for i in shown if i not in set(chosen)]

    def _refilter(self, _change=None) -> None:
        """New options for the list, the selection kept: three state updates, each consistent on its own -
        no selection, the new options, the selection again. The front end keeps a SelectMultiple's selection
        as positions into its options; new options arriving while an old index is set make the ipywidgets-8
        view apply the old positions to the new, shorter list ("Error setting state: Cannot set properties of
        undefined (setting 'selected')", part of the selection not highlighted). ``hold_sync()`` is no
        alternative: Colab's ipywidgets-7 front end applies the index before the new options, highlighting none."""
        self._syncing = True
        try:
            self.select.value = ()
            self.select.options = [_option(i) for i in self._visible()]
            self.select.value = tuple(self.ids)
        finally:
            self._syncing = False

    def _on_select(self, change) -> None:
        if getattr(self, "_syncing", False):
            return
        self._ids = sorted(change["new"])
        self._update()

    def _on_add_group(self, _button=None) -> None:
        if self.superclass.value == ALL:
            self.message.value = "<b>Pick a superclass first</b>, then press the button to add its 5 classes."
            return
        self.set_classes(sorted(set(self._ids) | set(superclass_members(self.superclass.value))))

    def _update(self) -> None:
        if self.valid:
            self.message.value = f"{len(self._ids)} classes selected: {', '.join(self.names)}"
            self.command.value = (f"In the notebooks' parameters cell: <code>{self.notebook_parameter}</code><br>"
                                  f"Run the suite with them:<br><code>{self.make_command}</code><br>"
                                  f"or papermill: <code>{self.papermill_yaml}</code>")
        else:
            self.message.value = (f"<span style='color:#b00'><b>Select at least two classes</b> "
                                  f"({len(self._ids)} selected) - a classifier needs two to tell apart.</span>")
            self.command.value = ""
        self._update_gallery()

    def _thumbnails(self, fine_id: int):
        """Test images of a class (uint8 NHWC) and where they come from: the full dataset when it is on disk,
        else the shipped sample (read once); ``(None, "placeholder")`` when neither has that class."""
        if self._test_images is None:
            if full_dataset_on_disk(self.data_dir):
                self._test_images = (*read_split(ensure_dataset(self.data_dir, download=False), "test"), "full")
            else:
                s = load_sample()
                self._test_images = (s["x_test"], s["y_test"].astype(np.int64), "sample")
        x, y, tag = self._test_images
        idx = np.flatnonzero(y == fine_id)[:THUMBS_PER_CLASS]
        return (x[idx], tag) if len(idx) else (None, "placeholder")

    def _update_gallery(self) -> None:
        import ipywidgets as W
        rows = []
        self.thumbnail_sources = {}
        for i in self.ids:
            images, tag = self._thumbnails(i)
            self.thumbnail_sources[i] = tag
            png = strip_png(images) if images is not None else placeholder_png()
            note = {"full": "", "sample": " (shipped sample)",
                    "placeholder": " - no images here: the full dataset is not on disk yet "
                                   "(it is downloaded when you train)"}[tag]
            width = 66 * (len(images) if images is not None else THUMBS_PER_CLASS)  # native size, not stretched
            rows.append(W.VBox([W.HTML(f"<b>{i}: {FINE_NAMES[i]}</b>{note}"),
                                W.Image(value=png, format="png", layout=W.Layout(width=f"{width}px"))]))
        self.gallery.children = tuple(rows)

    # --- display -----------------------------------------------------------------------------
    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)

    def __str__(self) -> str:
        state = "" if self.valid else " (fewer than two: not enough to train)"
        return (f"selected {self.ids} = {self.names}{state}\nnotebook parameter: {self.notebook_parameter}\n"
                f"{self.make_command}\npapermill {self.papermill_yaml}")


def picked(picker: "ClassPicker | None", default):
    """The picker's selection (``default``, a notebook's CLASSES parameter, without a picker). A picker
    holding fewer than two classes is an error saying so - never a silent fall back to ``default``."""
    if picker is None:
        return default
    if not picker.valid:
        raise ClassSelectionError(f"the class picker holds {len(picker.ids)} class(es) {picker.names}: select at "
                                  f"least two, or set USE_PICKER = False to train on CLASSES = {default!r}")
    return picker.ids

