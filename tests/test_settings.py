import re

import pytest

from fmnist.errors import FmnistError
from fmnist.settings import TrainSettings


def test_defaults_are_the_spec():
    s = TrainSettings()
    assert s.hidden_sizes == (512, 256, 64, 32) and s.dropout == 0.3 and s.batch_size == 64
    assert s.epochs == 100 and s.early_stopping_patience == 5 and s.lr_patience == 3
    assert s.learning_rate == 1e-3 and s.validation_fraction == 0.2 and s.lr_factor == 0.1


def test_round_trips_through_a_dict():
    s = TrainSettings(hidden_sizes=(128, 64), epochs=3, limit=500)
    assert TrainSettings.from_dict(s.to_dict()) == s


def test_unknown_setting_is_an_error():
    with pytest.raises(FmnistError, match="unknown setting.*hiden_sizes"):
        TrainSettings.from_dict({"hiden_sizes": [10]})


@pytest.mark.parametrize("field, value, reason", [
    ("dropout", 1.0, "dropout must be in"), ("learning_rate", 0, "learning_rate must be positive"),
    ("validation_fraction", 1.5, "validation_fraction must be in"), ("hidden_sizes", (), "hidden_sizes must be"),
    ("name", "a/b", "name may hold only"), ("seed", -1, "seed must be"),
    ("name", "", "name is empty: give one made of"),
    ("seed", 2**32, "seed must be"), ("learning_rate", float("inf"), "learning_rate must be a finite number"),
    ("weight_decay", float("nan"), "weight_decay must be a finite"),
    ("distill_temperature", float("inf"), "distill_temperature must be a finite"),
    ("distill_views", -1, "distill_views must be from 0 to 10"), ("distill_views", 11, "distill_views must be from"),
    ("distill_cutmix", -0.1, "distill_cutmix must be in"), ("distill_cutmix", 1.5, "distill_cutmix must be in"),
    ("hidden_sizes", (99999999999, 8), "hidden_sizes 99999999999,8 would need"),
    # Each passed once, then failed after Keras had started, or ran out of memory, or trained at a rate of 0.
    ("hidden_sizes", (1_000_000,), "hidden_sizes 1000000 would need 794,000,000 weights"),
    ("learning_rate", 1e-50, "learning_rate must be positive, at least 1.18e-38"),
    ("batch_size", 10**20, "batch_size must be from 2 to"),
    ("batch_size", 1, "2 or more: BatchNorm normalises each feature over the batch, and in a batch of one image"),
    ("batch_size", 0, "batch_size must be from 2 to"),
    ("epochs", 10**21, "epochs must be from 1 to"),
    ("name", "a" * 201, "name must be at most 200 bytes"), ("name", "é" * 101, "name must be at most 200 bytes"),
])
def test_bad_values_are_refused(field, value, reason):
    with pytest.raises(FmnistError, match=f"^invalid setting: .*{re.escape(reason)}") as refused:
        TrainSettings(**{field: value})
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    # The value given is said (a long name its first 39 characters, quoted as text is).
    said = f"'{shown[:39]}" if isinstance(value, str) else shown[:39]
    assert f" {said}" in str(refused.value)


@pytest.mark.parametrize("field, value, split, advice", [
    ("limit", 5, "5 images into 4 for training and 1", "raise --limit or change --validation-fraction"),
    # 47 images and a fraction of 0.0001 passed once, then failed after Keras had started.
    ("limit", 47, "47 images into 38 for training and 9", "raise --limit or change --validation-fraction"),
    ("validation_fraction", 0.0001, "60000 images into 59994 for training and 6", "change --validation-fraction"),
])
def test_a_split_too_small_for_every_class_is_refused_saying_its_sizes(field, value, split, advice):
    with pytest.raises(FmnistError, match=f"^invalid setting: a split of {split} for validation cannot hold all 10 "
                                          f"classes on each side; {advice}$"):
        TrainSettings(**{field: value})


def test_a_name_refused_is_said_quoted_as_its_spaces_would_read_as_the_sentence():
    with pytest.raises(FmnistError, match=r"may hold only letters, .* \(given 'my run'\)$"):
        TrainSettings(name="my run")


def test_a_name_that_is_not_utf8_is_refused_as_any_other_character():
    with pytest.raises(FmnistError, match=r"^invalid setting: name may hold only letters, .* \(given 'a\ufffdb'\)$"):
        TrainSettings(name=b"a\xffb".decode("utf-8", "surrogateescape"))  # as Python reads it from argv
    with pytest.raises(FmnistError, match=r"may hold only letters, .* \(given 'a\ufffdb'\)$"):
        TrainSettings(name="a\ud800b")  # a config.json's "\ud800", edited by hand


def test_a_refusal_of_two_settings_together_names_no_value_of_one_of_them():
    for settings, said in (({"distill_alpha": 1.5}, "distill_temperature must be positive and distill_alpha in [0, 1]"),
                           ({"weight_decay": 1e-4}, "weight_decay must be >= 0, and needs optimizer adamw")):
        with pytest.raises(FmnistError, match=f"^invalid setting: {re.escape(said)}$"):  # not "(given 4.0)"
            TrainSettings(**settings)


def test_the_smallest_split_that_holds_every_class_is_taken():
    assert TrainSettings(limit=48).limit == 48 and TrainSettings(validation_fraction=0.1, limit=95).limit == 95
    assert TrainSettings(name="a" * 200, learning_rate=1.2e-38).name == "a" * 200
    # A limit past the training set's size takes it all, however large (not multiplied as a float, which overflows).
    assert TrainSettings(limit=10**400).limit == 10**400 and TrainSettings(limit=60_001).limit == 60_001


@pytest.mark.parametrize("field, value, words", [
    ("hidden_sizes", "16", "a list of whole numbers"), ("hidden_sizes", [16.0], "a list of whole numbers"),
    ("dropout", "0.3", "a number"), ("dropout", True, "a number"), ("epochs", None, "a whole number"),
    ("epochs", 1.5, "a whole number"), ("limit", "500", "a whole number"), ("name", None, "text"),
    ("teacher", 3, "text"), pytest.param("dropout", 10**400, "a number within float's range", id="dropout-past-float"),
])
def test_a_value_of_the_wrong_type_is_refused_not_converted(field, value, words):
    """A hand-edited config.json must not train another network ("16" read as hidden layers 1 and 6)."""
    with pytest.raises(FmnistError, match=f"invalid setting: {field} must be {words}"):
        TrainSettings.from_dict({field: value})


def test_numpy_numbers_become_python_numbers_so_the_settings_save_as_json():
    import json

    import numpy as np

    s = TrainSettings(hidden_sizes=[np.int64(64), np.int64(32)], dropout=np.float32(0.25), seed=np.int64(7), limit=None)
    assert json.loads(json.dumps(s.to_dict()))["hidden_sizes"] == [64, 32]
    assert type(s.seed) is int and type(s.dropout) is float and s.hidden_sizes == (64, 32)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        TrainSettings().epochs = 3
