import pytest

from cifarlab.classes import (
    COARSE_NAMES,
    FINE_NAMES,
    FINE_TO_COARSE,
    ClassSelectionError,
    select_classes,
    superclass_members,
)


def test_catalogue_facts():
    assert len(FINE_NAMES) == 100 and len(set(FINE_NAMES)) == 100
    assert len(COARSE_NAMES) == 20
    # every superclass has exactly 5 fine classes
    assert sorted(FINE_TO_COARSE.count(c) for c in range(20)) == [5] * 20
    assert FINE_NAMES[0] == "apple" and FINE_NAMES[55] == "otter" and FINE_NAMES[58] == "pickup_truck"
    assert superclass_members("vehicles_1") == (8, 13, 48, 58, 90)


@pytest.mark.parametrize("spec", [
    [0, 55, 58], "0,55,58", "0 55 58", "apple,otter,pickup_truck", "Apple, OTTER, pickup truck",
    ["pickup-truck", "apple", 55], "apple otter pickup_truck", (58, 0, "otter"),
])
def test_equivalent_specs_give_the_same_selection(spec):
    sel = select_classes(spec)
    assert sel.ids == (0, 55, 58)
    assert sel.names == ("apple", "otter", "pickup_truck")
    assert sel.ids.index(58) == 2  # labels in ascending fine-id order, whatever the typed order


def test_superclass_expands_and_mixes():
    assert select_classes("vehicles 1").ids == (8, 13, 48, 58, 90)
    assert select_classes(["large man-made outdoor things", "apple"]).ids == (0, 12, 17, 37, 68, 76)
    assert select_classes("flowers,0").num_classes == 6


def test_recorded_mapping():
    d = select_classes("otter,apple").to_dict()
    assert d == {"ids": [0, 55], "names": ["apple", "otter"],
                 "superclasses": ["fruit_and_vegetables", "aquatic_mammals"]}


@pytest.mark.parametrize("spec, words", [
    ("aple,otter", ["unknown class name 'aple'", "apple"]),
    ("apple,otter,pickup_trck", ["pickup_truck"]),
    ("apple,100", ["100", "0..99"]),
    ([-1, 3], ["-1", "0..99"]),
    ("apple,otter,Apple", ["given twice", "apple"]),
    ("vehicles_1,bus", ["given twice", "bus"]),
    ("apple", ["at least 2"]),
    ([], ["at least 2"]),
    ([1.5, 2], ["cannot read"]),
])
def test_errors_are_clear(spec, words):
    with pytest.raises(ClassSelectionError) as e:
        select_classes(spec)
    for w in words:
        assert w in str(e.value)


def test_a_selection_is_accepted_where_classes_are():
    fish = select_classes("fish")
    assert select_classes(fish).ids == fish.ids
    from cifarlab.config import make_config
    assert make_config(classes=fish).classes == fish.ids
