from fmnist import run_settings


def test_a_groups_run_of_each_seed_is_a_finished_one_else_the_newest():
    candidates = [(1, True, "a"), (1, False, "b"), (2, False, "c"), (2, False, "d"), (3, True, "e"), (3, True, "f")]
    assert run_settings.pick_members(candidates) == {1: "a", 2: "d", 3: "f"}
