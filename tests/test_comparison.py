"""Comparisons that cannot mix experiments, a choice rule judged on paired validation data, and paired
statistics - on records built for the purpose, where the right answer is known."""
import json
import re

import numpy as np
import pytest
from conftest import fake_record

from cifarlab.comparison import ComparisonError, choose, compare, compare_and_save, group_records, paired_difference
from cifarlab.config import make_config
from cifarlab.records import RECORD_FILES, RecordError, find_records, load_record

N_VAL, N_TEST = 150, 300


def _correct(n, wrong):
    c = np.ones(n, bool)
    c[list(wrong)] = False
    return c


# --- paired statistics ------------------------------------------------------------------------------
def test_identical_predictions_are_not_distinguishable():
    a = _correct(N_TEST, range(30))
    p = paired_difference(a[None], a[None])
    assert p.diff == 0 and p.lo == 0 and p.hi == 0 and not p.distinguishable


def test_a_clear_difference_is_found_with_its_discordant_images():
    p = paired_difference(_correct(N_TEST, [])[None], _correct(N_TEST, range(30))[None])
    assert p.diff == pytest.approx(0.1) and p.a_only == 30 and p.b_only == 0
    assert p.distinguishable and 0.05 < p.lo < 0.1 <= p.hi < 0.15   # exact: no image favours b, so hi is 0.1


def test_pairing_separates_what_independent_samples_cannot():
    # Both about 90% right; b misses exactly a's 30 images plus 6 more. As independent samples the 2-point
    # difference is inside two standard errors (sqrt(2 * .9 * .1 / 300) = 2.4 points); image by image,
    # b is never right where a is wrong, so the difference is real.
    a, b = _correct(N_TEST, range(30)), _correct(N_TEST, range(36))
    assert 0.02 < 2 * np.sqrt(2 * 0.9 * 0.1 / N_TEST) * 1.0
    p = paired_difference(a[None], b[None])
    assert p.diff == pytest.approx(0.02) and p.distinguishable and p.lo > 0


def test_swapped_mistakes_cancel_out():
    a, b = _correct(N_TEST, range(0, 10)), _correct(N_TEST, range(10, 20))
    p = paired_difference(a[None], b[None])
    assert p.diff == 0 and p.a_only == 10 and p.b_only == 10 and not p.distinguishable and p.lo < 0 < p.hi


def test_seeds_are_resampled_too():
    # Seed to seed, a swings from 80% to 100% right; b sits at 90%. The mean difference is 0, and the
    # interval is wide because of the seeds, not the images.
    a = np.stack([_correct(N_TEST, range(60)), _correct(N_TEST, [])])
    b = np.stack([_correct(N_TEST, range(30)), _correct(N_TEST, range(30))])
    p = paired_difference(a, b)
    assert p.diff == pytest.approx(0.0) and not p.distinguishable and p.hi - p.lo > 0.1


# --- the choice rule --------------------------------------------------------------------------------
def _records(tmp_path, specs):
    """specs: (pooling, seed, val wrong, test wrong, train seconds[, overrides])"""
    for spec in specs:
        pooling, seed, vw, tw, secs, *more = spec
        cfg = make_config("improved", pooling=pooling, seed=seed, **(more[0] if more else {}))
        fake_record(tmp_path, cfg, _correct(N_VAL, vw), _correct(N_TEST, tw), secs)
    return group_records(find_records(tmp_path))


def test_a_clear_winner_is_chosen_even_when_slower(tmp_path):
    groups = _records(tmp_path, [("max", 0, range(5), range(10), 30.0), ("stride", 0, range(40), range(60), 10.0)])
    c = choose(groups)
    assert c.group.pooling == "max" and [g.pooling for g in c.tied] == ["max"]
    assert "improved/stride -0.2333" in c.explanation and "lower" in c.explanation and "None is tied" in c.explanation


def test_a_tie_is_broken_by_speed(tmp_path):
    # max is right on 2 more validation images: not distinguishable on 150 images, so the faster wins
    groups = _records(tmp_path, [("max", 0, range(10), range(20), 30.0), ("stride", 0, range(12), range(20), 10.0),
                                 ("avg", 0, range(60), range(60), 5.0)])
    c = choose(groups)
    assert c.group.pooling == "stride" and {g.pooling for g in c.tied} == {"max", "stride"}
    assert "the fastest wins: improved/stride" in c.explanation and "improved/avg" in c.explanation


def test_the_test_set_never_chooses(tmp_path):
    # max wins on validation but loses clearly on test: max is still chosen
    groups = _records(tmp_path, [("max", 0, range(0), range(90), 20.0), ("avg", 0, range(40), range(0), 20.0)])
    c = choose(groups)
    assert c.group.pooling == "max"
    assert "test" not in c.explanation.replace("test set", "")


def test_the_saved_seed_is_the_best_on_validation(tmp_path):
    groups = _records(tmp_path, [("max", 0, range(9), range(10), 20.0), ("max", 1, range(3), range(50), 20.0),
                                 ("max", 2, range(6), range(0), 20.0)])
    c = choose(groups)
    assert c.record.config.seed == 1 and "only configuration" in c.explanation
    assert "seed-to-seed std (0.0000)" not in c.explanation


# --- experiments never mix ----------------------------------------------------------------------------
def test_mixed_folder_never_pools_experiments(tmp_path):
    runs = tmp_path / "runs"
    # experiment 1: apple/otter/pickup_truck, improved/max at 30 and at 3 epochs, two seeds each
    for seed, vw in ((0, range(10)), (1, range(20))):
        fake_record(runs, make_config("improved", pooling="max", seed=seed), _correct(N_VAL, vw),
                    _correct(N_TEST, vw), 30.0)
        fake_record(runs, make_config("improved", pooling="max", seed=seed, epochs=3), _correct(N_VAL, range(50)),
                    _correct(N_TEST, range(90)), 3.0)
    # experiment 2: other classes, same model and pooling
    fake_record(runs, make_config("improved", pooling="max", classes="vehicles_1"), _correct(250, range(100)),
                _correct(500, range(200)), 50.0)
    # a dry run of experiment 1, and a diverged run
    fake_record(runs, make_config("improved", pooling="max", dry_run=True), _correct(N_VAL, range(149)),
                _correct(N_TEST, range(299)), 0.1)
    fake_record(runs, make_config("improved", pooling="avg", lr=1e9), _correct(N_VAL, []), _correct(N_TEST, []),
                1.0, status="diverged")

    with pytest.raises(ComparisonError) as e:
        compare(runs)
    msg = str(e.value)
    assert "2 experiments found" in msg and "apple-otter-pickup_truck" in msg and "vehicles_1" in msg
    assert "--experiment" in msg and "never compared together" in msg

    c = compare(runs, "apple,otter,pickup_truck")  # chosen by its classes
    labels = {g.label: g for g in c.groups}
    assert set(labels) == {"improved/max (epochs 30)", "improved/max (epochs 3)"}
    assert labels["improved/max (epochs 30)"].n == 2 and labels["improved/max (epochs 3)"].n == 2
    assert labels["improved/max (epochs 30)"].mean("val_acc") == pytest.approx(1 - 15 / N_VAL)
    assert c.dry_runs == 1 and [r.config.lr for r in c.experiment.diverged] == [1e9]
    assert "diverged, not compared" in c.summary() and "vehicles_1" in c.summary()
    assert c.choice.group.label == "improved/max (epochs 30)"
    v = compare(runs, "vehicles_1")
    assert [g.n for g in v.groups] == [1] and v.groups[0].mean("test_acc") == pytest.approx(0.6)


def test_cli_compare_lists_the_experiments(tmp_path, cli):
    runs = tmp_path / "runs"
    fake_record(runs, make_config("template", classes=[0, 55]), _correct(100, []), _correct(200, []))
    fake_record(runs, make_config("template", classes=[0, 58]), _correct(100, []), _correct(200, []))
    r = cli("compare", "--runs", runs)
    assert r.returncode == 2 and "2 experiments found" in r.stderr and "apple-otter" in r.stderr
    assert "apple-pickup_truck" in r.stderr and "Traceback" not in r.stderr
    r = cli("compare", "--runs", runs, "--experiment", "apple-otter")
    assert r.returncode == 0 and "apple-otter" in r.stdout and "pickup" not in r.stdout.split("Other experiments")[0]


def test_no_validation_split_is_compared_but_not_chosen(tmp_path):
    runs = tmp_path / "runs"
    for pooling in ("max", "avg"):
        fake_record(runs, make_config("template", pooling=pooling, val_fraction=0), _correct(0, []),
                    _correct(N_TEST, range(30)))
    c = compare(runs)
    assert c.choice is None and "no validation split" in c.no_choice and "template/max" in c.tables()
    with pytest.raises(ComparisonError, match="nothing saved.*no validation split"):
        compare_and_save(runs, tmp_path / "best")
    assert not (tmp_path / "best").exists()


def test_damaged_and_hand_edited_records_are_named(tmp_path):
    """A damaged record is named and left out; the others are still compared; nothing is changed."""
    runs = tmp_path / "runs"
    path = fake_record(runs, make_config("template"), _correct(N_VAL, []), _correct(N_TEST, []))
    good = (path / "config.json").read_text()
    (path / "config.json").write_text(good[:40])
    with pytest.raises(ComparisonError, match=r"not read: .*incomplete run record \(config.json unreadable"):
        compare(runs)
    (path / "config.json").write_text(good.replace('"epochs": 500', '"epochs": 50'))
    with pytest.raises(RecordError, match="config.json was changed after the run"):
        load_record(path)
    (path / "config.json").write_text(good)
    (path / "metrics.json").write_text("{not json")
    fake_record(runs, make_config("template", pooling="max"), _correct(N_VAL, []), _correct(N_TEST, []))
    c = compare(runs)
    assert [g.label for g in c.groups] == ["template/max"]
    assert re.search(r"not read: .*incomplete run record \(metrics.json unreadable", c.summary())
    assert sorted(p.name for p in path.iterdir()) == sorted(RECORD_FILES)
    with pytest.raises(RecordError, match="does not exist"):
        compare(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ComparisonError, match="no run records"):
        compare(tmp_path / "empty")


def test_selection_json_is_the_same_from_cli_and_python(tmp_path, template_runs, cli):
    """One function compares, chooses and saves: the CLI and the notebook both call it."""
    runs = template_runs
    compare_and_save(runs, tmp_path / "best_py")
    r = cli("compare", "--runs", runs, "--best", tmp_path / "best_cli")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((tmp_path / f / "selection.json").read_text()) for f in ("best_py", "best_cli"))
    for d in (a, b):
        d.pop("onnx_check")
    assert a == b and a["experiment_name"] == "apple-otter-pickup_truck" and "paired" in a["paired_method"]


def test_paired_difference_refuses_sides_scored_on_different_numbers_of_images():
    a, b = np.ones((2, 10), bool), np.ones((2, 1), bool)    # one image would broadcast silently
    with pytest.raises(ComparisonError, match=r"the same images on both sides \(10 vs 1\)"):
        paired_difference(a, b)
