import pytest
from widget_checks import replay  # the front end's state updates, replayed (shared with the ipywidgets 7 run)

from cifarlab.classes import ClassSelectionError
from cifarlab.widgets import ALL, ClassPicker, picked


@pytest.fixture
def picker():
    return ClassPicker([0, 55, 58])


def test_initial_selection_and_outputs(picker):
    assert picker.ids == [0, 55, 58] and picker.names == ["apple", "otter", "pickup_truck"]
    assert picker.make_command == 'make run-all CLASSES="apple otter pickup_truck"'
    assert picker.papermill_yaml == '-y "CLASSES: [0, 55, 58]"'
    assert picker.make_command in picker.command.value.replace("&quot;", '"')
    # the sample has these classes: thumbnails come from it, one strip per class
    assert picker.thumbnail_sources == {0: "sample", 55: "sample", 58: "sample"}
    assert len(picker.gallery.children) == 3
    png = picker.gallery.children[0].children[1].value
    assert png[:4] == b"\x89PNG"


def test_selecting_from_code_runs_the_callbacks(picker):
    picker.select.value = (0, 8)
    assert picker.ids == [0, 8]
    assert "bicycle" in picker.message.value and 'CLASSES="apple bicycle"' in picker.make_command
    # bicycle is not in the sample, and the full data is not on disk here: a placeholder, said so
    assert picker.thumbnail_sources == {0: "sample", 8: "placeholder"}
    assert "not on disk" in picker.gallery.children[1].children[0].value


def test_fewer_than_two_classes_message(picker):
    picker.select.value = (55,)
    assert not picker.valid and "at least two" in picker.message.value
    assert picker.command.value == ""
    with pytest.raises(ClassSelectionError, match="picker holds 1 class"):   # said, never a silent fall back
        picked(picker, [1, 2])
    picker.select.value = ()
    assert "0 selected" in picker.message.value


def test_filters_keep_the_selection(picker):
    picker.superclass.value = "vehicles_1"
    shown = [v for _, v in picker.select.options]
    assert set(shown) == {8, 13, 48, 58, 90, 0, 55}  # the superclass, plus what is selected
    picker.filter.value = "truck"
    assert {v for _, v in picker.select.options} == {58, 0, 55}
    assert picker.ids == [0, 55, 58]
    picker.filter.value = ""
    picker._on_add_group()
    assert picker.ids == [0, 8, 13, 48, 55, 58, 90]
    assert picker.papermill_yaml == '-y "CLASSES: [0, 8, 13, 48, 55, 58, 90]"'


def test_unknown_names_rejected_with_the_data_layer_error(picker):
    with pytest.raises(ClassSelectionError, match="did you mean 'apple'"):
        picker.set_classes("aple,otter")
    assert picker.ids == [0, 55, 58]  # unchanged
    picker.set_classes("flowers")
    assert picker.names == ["orchid", "poppy", "rose", "sunflower", "tulip"]


def test_thumbnails_from_the_full_data(full_data_dir):
    p = ClassPicker("bicycle,bus", data_dir=full_data_dir)
    assert p.thumbnail_sources == {8: "full", 13: "full"}


def test_refiltering_never_sends_a_selection_past_the_new_options(picker):
    """Narrowing the list (a superclass, a filter) while classes far down are selected, then adding a
    superclass: each state update is consistent on its own, and the front end ends up
    highlighting exactly the selection."""
    steps = [lambda: setattr(picker.superclass, "value", "vehicles_1"), picker._on_add_group,
             lambda: setattr(picker.superclass, "value", "flowers"),
             lambda: setattr(picker.filter, "value", "tr"), lambda: setattr(picker.filter, "value", ""),
             lambda: setattr(picker.superclass, "value", ALL)]
    for step in steps:
        past_the_end, highlighted = replay(picker.select, step)
        assert past_the_end == []
        assert sorted(highlighted) == picker.ids
    assert picker.ids == [0, 8, 13, 48, 55, 58, 90]


def test_the_selection_is_listed_first(picker):
    """12 rows of 100 classes: the selected ones come first, so all of them are in view."""
    assert [v for _, v in picker.select.options][:3] == [0, 55, 58]
    assert len(picker.select.options) == 100 and picker.select.index == (0, 1, 2)
    picker.superclass.value = "vehicles_1"
    picker._on_add_group()
    assert [v for _, v in picker.select.options][:7] == [0, 8, 13, 48, 55, 58, 90]
    assert [v for _, v in picker.select.options][7:] == []  # the superclass's others are all selected now
    picker.superclass.value = ALL
    values = [v for _, v in picker.select.options]
    assert values[:7] == [0, 8, 13, 48, 55, 58, 90] and sorted(values) == list(range(100))
    assert picker.select.index == tuple(range(7))


def test_a_smaller_new_selection_under_a_filter(picker):
    """12 classes selected, the list narrowed to a superclass, then two other classes chosen from code: the
    old selection's positions (up to 11) must not reach the new, 7-row list."""
    picker.set_classes("flowers,vehicles_1,apple,otter")
    picker.superclass.value = "fish"
    assert len(picker.ids) == 12 and len(picker.select.options) == 17
    past_the_end, highlighted = replay(picker.select, lambda: picker.set_classes([1, 2]))
    assert past_the_end == [] and highlighted == [1, 2] == picker.ids
    assert len(picker.select.options) == 6  # the two, then the other fish
