import dataclasses
import json
import logging
import re
import shutil

import numpy as np
import pytest
from scipy import stats

from conftest import page_text
from fmnist import artifacts, model_files, run_list, run_locks, run_lookup, runs, stopping
from fmnist.cli import _json_value, build_parser
from fmnist.data import load_dataset
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.resume import resume_run
from fmnist.seeds import (_member_dirs, accuracy_spread, interval_text, refuse_other_runs, resume_seeds, summarise,
                          summary_record, summary_text, train_seeds)
from fmnist.settings import TrainSettings


def test_summary_statistics_match_scipy():
    accs = [0.8958, 0.8921, 0.9003, 0.8899, 0.8975]
    f1 = np.random.default_rng(3).uniform(0.6, 0.99, (len(accs), len(CLASS_NAMES)))  # seed x class, all different
    s = summarise(accs, [dict(zip(CLASS_NAMES, row)) for row in f1])
    assert s["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert s["test_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    expected = stats.t.interval(0.95, 4, loc=np.mean(accs), scale=stats.sem(accs))
    assert s["test_accuracy"]["ci95"] == pytest.approx(list(expected))
    assert [s["per_class_f1"][name]["mean"] for name in CLASS_NAMES] == pytest.approx(f1.mean(axis=0))
    assert [s["per_class_f1"][name]["std"] for name in CLASS_NAMES] == pytest.approx(f1.std(axis=0, ddof=1))


def test_the_interval_stays_within_what_an_accuracy_can_be():
    near_one = [0.97, 0.99, 0.999]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(near_one), scale=stats.sem(near_one))
    assert 0 < low and high > 1
    f1 = [dict.fromkeys(CLASS_NAMES, 0.5)] * 3
    assert summarise(near_one, f1)["test_accuracy"]["ci95"] == pytest.approx([low, 1.0])
    assert summarise([1 - a for a in near_one], f1)["test_accuracy"]["ci95"] == pytest.approx([0.0, 1 - low])
    apart = summarise([0.1, 0.6], f1[:2])  # two seeds far apart: clipped at both ends, it bounds nothing
    assert apart["test_accuracy"]["ci95"] == [0.0, 1.0] and apart["test_accuracy"]["ci95_cut_at"] == [0, 1]
    assert summarise(near_one, f1)["test_accuracy"]["ci95_cut_at"] == [1]
    assert summarise([1 - a for a in near_one], f1)["test_accuracy"]["ci95_cut_at"] == [0]
    assert summarise([0.8, 0.81], f1[:2])["test_accuracy"]["ci95_cut_at"] == []
    assert accuracy_spread([0.9]) == {"values": [0.9], "mean": 0.9, "std": None, "ci95": None, "ci95_cut_at": []}
    assert interval_text(apart["test_accuracy"]["ci95"]) == (
        "0.0000-1.0000, all of 0-1: too few seeds for how far apart they scored, more narrow it")
    assert interval_text(summarise(near_one, f1)["test_accuracy"]["ci95"], " to ") == f"{low:.4f} to 1.0000, cut at 1"
    assert interval_text(summarise([1 - a for a in near_one], f1)["test_accuracy"]["ci95"]) == \
        f"0.0000-{1 - low:.4f}, cut at 0"
    assert interval_text([0.0, 0.0]) == "0.0000-0.0000" and interval_text([0.8, 0.9]) == "0.8000-0.9000"  # not cut


def test_seed_group_keeps_its_runs_and_summary_and_a_killed_group_is_finished_by_resume(tmp_path, tiny_data, caplog):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=2, batch_size=16, name="tiny", seed=5)
    with caplog.at_level(logging.INFO, logger="fmnist.seeds"):
        group, summary = train_seeds(settings, "jax", 3, runs_dir=tmp_path, dataset=dataset)
    assert group.parent == tmp_path and group.name.endswith("tiny-x3")
    assert [r["seed"] for r in summary["runs"]] == [5, 6, 7]
    for r in summary["runs"]:  # each seed's score as it came, and in the closing lines (stdout) too
        assert f"seed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, macro F1" in caplog.text
        assert f"\nseed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, 2 epochs\n" in summary_text(group, summary)
    assert all((group / r["run_dir"] / "model.keras").is_file() for r in summary["runs"])
    member_report = page_text(group / summary["runs"][0]["run_dir"] / artifacts.REPORT_HTML)  # names its group
    assert f"<th scope=row>--seeds group</th><td>{group.name}: &#x27;fmnist runs compare {group}&#x27;" in member_report
    assert json.loads((group / artifacts.SEED_SUMMARY).read_text())["seeds"] == 3
    # What it prints ends with the page to look at next, a command that reaches the group pasted as it is.
    pasted = summary_text(group, summary).splitlines()[-1].removeprefix("next: fmnist ").split("   ")[0]
    assert build_parser().parse_args(pasted.split()).runs == [group]
    # `fmnist runs` gives the group a line of its own, above its runs, with the summary's mean and spread.
    rows = run_list.list_runs(tmp_path)
    [listed] = run_list.seed_groups(rows, tmp_path)
    assert (listed["group"], listed["seeds"], listed["scored"]) == (group.name, 3, 3)
    assert listed["test_accuracy"]["mean"] == pytest.approx(summary["test_accuracy"]["mean"])
    assert listed["test_accuracy"]["std"] == pytest.approx(summary["test_accuracy"]["std"])
    assert listed["test_accuracy"]["ci95"] == pytest.approx(summary["test_accuracy"]["ci95"])  # in --json too
    assert listed["train_seconds"] == pytest.approx(summary["train_seconds"]["mean"], abs=0.01)  # rounded in status
    macro_f1 = [artifacts.read_json(group / r["run_dir"] / artifacts.METRICS)["macro_f1"] for r in summary["runs"]]
    assert listed["macro_f1"] == pytest.approx(np.mean(macro_f1))
    assert listed["path"] == str(group)  # for a script reading `fmnist runs --json` elsewhere, as each run's
    printed = json.loads(json.dumps(summary_record(group, summary), default=_json_value))  # as --json prints it
    assert [r["run_dir"] for r in printed["runs"]] == [str(group / r["run_dir"]) for r in summary["runs"]]
    lines = run_list.format_runs(rows, [listed], tmp_path).splitlines()
    table = [re.split(r"\s{2,}", line.lstrip()) for line in lines]
    # Begun when its group.json says (its folder's name too), not when its newest run began.
    began = artifacts.read_json(group / artifacts.SEED_GROUP)["created"]
    newest = max(r["created"] for r in rows if r["run"].startswith(f"{group.name}/"))
    assert listed["created"] == began < newest  # in --json: the table's names begin with it
    assert table[1][0] == f"{group.name}/" and table[1][-4:] == [
        f"{summary['test_accuracy']['mean']:.4f}", f"{listed['macro_f1']:.4f}",
        f"{listed['train_seconds']:.1f}", f"mean of 3 seeds, sd {summary['test_accuracy']['std']:.4f}"]
    # Its runs indented under it, by their own folders' names (which commands take too); beside it, tiny data's folder.
    below = [line for line in lines[2:] if not line.startswith(run_list.NOTE_INDENT)][:3]
    in_group = [table[1]] + [re.split(r"\s{2,}", line.lstrip()) for line in below
                             if line.startswith(run_list.MEMBER_INDENT + "2")]
    assert [line[table[0].index("seed")] for line in in_group] == ["5-7", "5", "6", "7"]  # the group's, then by seed
    # The settings its recipe's differ in, named once, under the group's line: its runs share them.
    assert lines[2].startswith(run_list.NOTE_INDENT + "spec with ") and lines.count(lines[2]) == 1
    assert sorted(line[0] for line in in_group[1:]) == sorted(r["run_dir"] for r in summary["runs"])
    # Copies with a seed the group never planned, or one damaged by hand, are listed but counted in no mean.
    for name, seed in (("stray", 99), ("damaged", [5])):
        copy = shutil.copytree(group / summary["runs"][0]["run_dir"], group / name)
        config = artifacts.read_json(copy / artifacts.CONFIG)
        artifacts.write_json(copy / artifacts.CONFIG, {**config, "settings": {**config["settings"], "seed": seed}})
    [listed_again] = run_list.seed_groups(run_list.list_runs(tmp_path), tmp_path)
    assert listed_again == listed
    shutil.rmtree(group / "stray"), shutil.rmtree(group / "damaged")
    # A second run of a planned seed, trained there by hand later: the group counts it, and the first says so.
    first_of_seed = group / summary["runs"][0]["run_dir"]
    again = shutil.copytree(first_of_seed, group / "again")
    artifacts.write_json(again / artifacts.CONFIG, {**artifacts.read_json(again / artifacts.CONFIG),
                                                    "created": "2999-01-01T00:00:00Z"})
    _, record = run_list.runs_command(tmp_path)
    [listed_again] = record["groups"]
    assert listed_again["passed_over"] == {first_of_seed.name: "again"}
    [noted] = [r for r in record["runs"] if r["run"] == f"{group.name}/{first_of_seed.name}"]
    assert noted["notes"] == [f"not in its group's mean: the group counts its other run of seed "
                              f"{summary['runs'][0]['seed']}, again"]
    shutil.rmtree(again)

    # As if killed while scoring the first seed and training the second: the third never began, no summary.
    first, second, third = (group / r["run_dir"] for r in summary["runs"])
    first_model = (first / artifacts.MODEL).read_bytes()
    (first / artifacts.METRICS).unlink()
    runs.set_status(second, "interrupted")
    rows = (second / artifacts.HISTORY).read_bytes().splitlines(keepends=True)
    (second / artifacts.HISTORY).write_bytes(b"".join(rows[:2]))  # killed before its first epoch's backup
    shutil.rmtree(third)
    (group / artifacts.SEED_SUMMARY).unlink()
    with pytest.raises(FmnistError, match=r"give one of its runs, such as [^;]*$"):  # no page of its seeds to draw yet
        runs.require_run_dir(group)
    # What `fmnist runs` and the refusals advise is the group's resume, which also trains the third seed.
    assert run_list.summarize(second)["notes"] == [f"fmnist train --resume {group} continues its group"]
    assert run_list.summarize(first)["notes"] == [f"not scored: fmnist train --resume {group} scores it"]
    assert runs.how_to_finish(second) == f"'fmnist train --resume {group}' finishes it"
    [cut] = run_list.seed_groups(run_list.list_runs(tmp_path), tmp_path)
    assert cut["scored"] == 0 and cut["test_accuracy"] is None and cut["summary"] is None
    line, _, note = run_list.format_runs(run_list.list_runs(tmp_path), [cut], tmp_path).splitlines()[1:4]
    assert line.endswith("0 of 3 seeds scored")  # what to do on a line below, as a run's notes, after its settings
    assert note == f"{run_list.NOTE_INDENT}fmnist train --resume {group} continues it"
    with run_locks.claim_run(group):  # as a process resuming the group holds it: nothing to do but wait
        [live] = run_list.seed_groups(run_list.list_runs(tmp_path), tmp_path)
        assert run_list.format_runs(run_list.list_runs(tmp_path), [live], tmp_path).splitlines()[1].endswith(
            "0 of 3 seeds scored, being trained")
        assert run_list.summarize(second)["notes"] == ["its group's training continues it"]
        with pytest.raises(FmnistError, match=f"^{group} is being trained right now; wait for it to finish "):
            resume_seeds(group, dataset=dataset)
        with pytest.raises(FmnistError, match=f"one run of the --seeds group {group}, which another process is "
                                              "training now"):
            resume_run(second, dataset=dataset)
        with pytest.raises(FmnistError, match="which another process is training now; to evaluate it, wait"):
            with run_lookup.idle_run(first, tmp_path, "evaluate it"):
                pass
    copy = shutil.copytree(group, tmp_path / "copy" / group.name)  # so that the group's own resume finds it cut short
    with caplog.at_level(logging.WARNING, logger="fmnist.resume"):
        resume_run(copy / second.name, dataset=dataset)  # that run alone: done, and the rest of the group pointed to
    assert f"which has no summary yet: 'fmnist train --resume {copy}' trains its seeds not begun" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmnist.seeds"):
        _, resumed = resume_seeds(group, dataset=dataset)
    before, after = summary["runs"], resumed["runs"]
    for r in after:  # the one finished before the resume too
        assert f"seed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, macro F1" in caplog.text
    assert [r["run_dir"] for r in after[:2]] == [r["run_dir"] for r in before[:2]]  # kept, and resumed in place
    outcome = [(r["seed"], r["test_accuracy"], r["epochs"]) for r in after]
    assert outcome == [(r["seed"], r["test_accuracy"], r["epochs"]) for r in before]  # seeds fix every result
    assert (first / artifacts.MODEL).read_bytes() == first_model and (group / artifacts.SEED_SUMMARY).is_file()
    with pytest.raises(FmnistError, match="trained with the jax backend"):
        resume_seeds(group, backend="tensorflow", dataset=dataset)
    other = dataclasses.replace(dataset, checksums={**dataset.checksums, "train-images-idx3-ubyte": "0" * 64})
    with pytest.raises(FmnistError, match="not the data"):
        resume_seeds(group, dataset=other)

    (third_again := group / resumed["runs"][2]["run_dir"]).joinpath(artifacts.REPORT_HTML).unlink()  # killed drawing
    with caplog.at_level(logging.INFO, logger="fmnist.seeds"):
        resume_seeds(group, dataset=dataset)
    assert (third_again / artifacts.REPORT_HTML).is_file()
    assert f"{group} had finished: nothing trained; its seeds' files checked" in caplog.text  # said, as of a run
    summary_json = (group / artifacts.SEED_SUMMARY).read_bytes()
    (group / artifacts.SEED_SUMMARY).unlink()  # killed after its last seed, before it wrote the summary
    rows = run_list.list_runs(tmp_path)
    line, _, note = run_list.format_runs(rows, run_list.seed_groups(rows, tmp_path), tmp_path).splitlines()[1:4]
    assert line.endswith("3 of 3 seeds scored, no summary.json")
    assert note == f"{run_list.NOTE_INDENT}fmnist train --resume {group} writes it"
    (group / artifacts.SEED_SUMMARY).write_bytes(summary_json)
    status = artifacts.read_json(first / artifacts.STATUS)
    artifacts.write_json(first / artifacts.STATUS, {"state": "finished"})  # edited by hand
    with pytest.raises(FmnistError, match="status.json lacks its epochs or training time; restore it, or remove"):
        resume_seeds(group, dataset=dataset)
    artifacts.write_json(first / artifacts.STATUS, status)
    record = artifacts.read_json(group / artifacts.SEED_GROUP)
    for seeds, refusal in ((0, "need 2 seeds or more"), (10**9, "at most 1000")):
        artifacts.write_json(group / artifacts.SEED_GROUP, {**record, "seeds": seeds})
        with pytest.raises(FmnistError, match=refusal):
            resume_seeds(group, dataset=dataset)
        rows = run_list.list_runs(tmp_path)  # listed as it is, never as the mean of a group it is not
        line, _, note = run_list.format_runs(rows, run_list.seed_groups(rows, tmp_path), tmp_path).splitlines()[1:4]
        assert line.endswith("3 seeds scored")
        assert note == f"{run_list.NOTE_INDENT}group.json damaged: restore it from a copy"
    # Unreadable altogether, or made by a later fmnist with a setting this one does not know: its runs are still its
    # own, each as the group has it, and counted.
    for damaged in ("{cut", {**record, "settings": {**record["settings"], "mixup_alpha": 0.2}}):
        if isinstance(damaged, str):
            (group / artifacts.SEED_GROUP).write_text(damaged)
        else:
            artifacts.write_json(group / artifacts.SEED_GROUP, damaged)
            for run in group.iterdir():
                if (run / artifacts.CONFIG).is_file():
                    config = artifacts.read_json(run / artifacts.CONFIG)
                    config["settings"]["mixup_alpha"] = 0.2
                    artifacts.write_json(run / artifacts.CONFIG, config)
        rows = run_list.list_runs(tmp_path)
        [listed] = [g for g in run_list.seed_groups(rows, tmp_path) if g["group"] == group.name]
        assert listed["scored"] == 3 and listed["foreign"] == [], damaged
    # Where one run is wanted (evaluate, report, predict, serve, export, compare), the group is named as such.
    first_run = sorted(r["run_dir"] for r in resumed["runs"])[0]
    for refused in (lambda: runs.require_run_dir(group), lambda: model_files.verified_model_path(group)):
        with pytest.raises(FmnistError, match=f"{group} is a group of 3 runs made by 'fmnist train --seeds', not one "
                                              f"run: give one of its runs, such as {group / first_run}; 'fmnist runs "
                                              f"compare {group}' draws one page of its seeds$"):
            refused()


def test_a_groups_warnings_each_name_their_seed(tmp_path, tiny_data, caplog):
    """Under -q a group's warnings are all it prints: each seed's begins with it, as they would read alike."""
    folder, sums = tiny_data
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, batch_size=4096, name="tiny", seed=5)  # more than its images
    with caplog.at_level(logging.INFO, logger="fmnist"):
        group, summary = train_seeds(settings, "jax", 2, runs_dir=tmp_path,
                                     dataset=load_dataset(folder, checksums=sums))
    batch = [r.getMessage() for r in caplog.records if "the batch of 4096 is larger" in r.getMessage()]
    assert [said.split(":")[0] for said in batch] == ["seed 5", "seed 6"], batch
    for entry in summary["runs"]:  # each seed's score as it comes, with where its page is
        scores = artifacts.read_json(group / entry["run_dir"] / artifacts.METRICS)
        assert (f"seed {entry['seed']}: test accuracy {scores['test_accuracy']:.4f}, macro F1 {scores['macro_f1']:.4f} "
                f"(report: {group / entry['run_dir'] / artifacts.REPORT_HTML})") in caplog.messages
    logging.getLogger("fmnist.train").warning("after the group")  # as it was once the group is done
    assert caplog.records[-1].getMessage() == "after the group"


def test_the_listing_picks_a_groups_runs_as_its_resume_does(tmp_path, tiny_data):
    """A second run of a seed whose status.json is damaged, or whose seed is JSON's true, is no seed's run for the
    group's resume: the listing neither counts it nor passes the group's own run of that seed over for it."""
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, batch_size=16, name="tiny", seed=1)
    group, summary = train_seeds(settings, "jax", 2, runs_dir=tmp_path, dataset=dataset)
    first, second = (group / r["run_dir"] for r in summary["runs"])
    planned = artifacts.read_json(group / artifacts.SEED_GROUP)
    damaged = shutil.copytree(first, group / "zz-damaged")
    (damaged / artifacts.STATUS).write_text("{")
    runs.set_status(first, runs.INTERRUPTED)
    true_seed = shutil.copytree(first, group / "zz-true")
    config = artifacts.read_json(true_seed / artifacts.CONFIG)
    artifacts.write_json(true_seed / artifacts.CONFIG, {**config, "settings": {**config["settings"], "seed": True}})
    runs.set_status(true_seed, runs.FINISHED)
    assert _member_dirs(group, planned) == {1: first, 2: second}
    rows = run_list.list_runs(tmp_path)
    [listed] = run_list.seed_groups(rows, tmp_path)
    assert listed["passed_over"] == {} and listed["scored"] == 1 and listed["foreign"] == []
    assert not [note for row in rows for note in row["notes"] if "not in its group's mean" in note]


def test_a_groups_damaged_member_is_trained_again_and_a_diverged_one_ends_the_group(tmp_path, tiny_data):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, batch_size=16, name="tiny", seed=5)
    group, summary = train_seeds(settings, "jax", 2, runs_dir=tmp_path, dataset=dataset)
    first, second = (group / r["run_dir"] for r in summary["runs"])
    (second / artifacts.CONFIG).write_text("{")  # damaged by hand: not JSON
    (group / artifacts.SEED_SUMMARY).unlink()
    _, resumed = resume_seeds(group, dataset=dataset)
    assert [r["seed"] for r in resumed["runs"]] == [5, 6] and resumed["runs"][1]["run_dir"] != second.name
    shutil.rmtree(second)
    status = (first / artifacts.STATUS).read_bytes()
    (first / artifacts.STATUS).write_text("{")  # damaged by hand too: listed as it is, and trained again
    rows = run_list.list_runs(tmp_path)
    assert run_list.seed_groups(rows, tmp_path)[0]["scored"] == 1
    assert "status.json damaged: restore it from a copy" in {note for row in rows for note in row["notes"]}
    assert list(_member_dirs(group, artifacts.read_json(group / artifacts.SEED_GROUP))) == [6]
    (first / artifacts.STATUS).write_bytes(status)
    # A run copied in by hand with other settings: resumed with the group's, or counted in its mean, if not refused.
    edited = shutil.copytree(first, group / "edited")
    config = artifacts.read_json(edited / artifacts.CONFIG)
    # One the listing's columns do not show, one a later fmnist may add, another backend, other data: compared all
    # the same.
    for edit, differ in [({"settings": {**config["settings"], "label_smoothing": 0.1}}, "label_smoothing"),
                         ({"settings": {**config["settings"], "mixup_alpha": 0.2}}, "mixup_alpha"),
                         ({"backend": "tensorflow"}, "backend"),
                         ({"data": {**config["data"], "sha256": {}}}, "data")]:
        artifacts.write_json(edited / artifacts.CONFIG, {**config, **edit})
        with pytest.raises(FmnistError, match=re.escape(f"{edited} differs from its --seeds group, in group.json, in "
                                                        f"its {differ}: it was copied or edited there by hand; move "
                                                        f"it out of {group}, then resume the group")):
            resume_seeds(group, dataset=dataset)
        rows = run_list.list_runs(tmp_path)
        [listed] = run_list.seed_groups(rows, tmp_path)  # listed as the resume sees it: not counted, and named
        assert listed["scored"] == 2 and listed["foreign"] == ["edited"]
        line, _, note = run_list.format_runs(rows, [listed], tmp_path).splitlines()[1:4]
        assert line.endswith("2 of 2 seeds scored") and note == (
            f"{run_list.NOTE_INDENT}edited: settings, backend or data other than the group's (copied or edited there "
            "by hand): move it out of the group")
    shutil.rmtree(edited)

    retrained = group / resumed["runs"][1]["run_dir"]
    runs.set_status(retrained, "failed", error="training diverged in epoch 1: the loss became nan", diverged=True)
    rows = run_list.list_runs(tmp_path)
    [listed] = run_list.seed_groups(rows, tmp_path)
    assert listed["diverged"] == [6] and listed["scored"] == 1
    line, _, note = run_list.format_runs(rows, [listed], tmp_path).splitlines()[1:4]
    assert line.endswith("1 of 2 seeds scored")
    assert note == f"{run_list.NOTE_INDENT}seed 6 diverged: train a new group with a lower --learning-rate"
    with pytest.raises(FmnistError, match=f"^seed 6 of {group} diverged \\({retrained.name}\\): resumed with the same "
                                          "settings it would diverge again; train a new group with a lower "
                                          "--learning-rate$"):
        resume_seeds(group, dataset=dataset)


def test_a_group_stopped_between_seeds_names_the_group_and_its_resume(tmp_path, tiny_data, monkeypatch, caplog):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    import keras

    cleared = []
    clear_session = keras.backend.clear_session

    def stop_at_the_second_seed():  # a Ctrl-C that lands once the first seed is scored
        cleared.append(clear_session())
        if len(cleared) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.backend, "clear_session", stop_at_the_second_seed)
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, batch_size=16, name="tiny", seed=5)
    with caplog.at_level(logging.WARNING, logger="fmnist"), pytest.raises(KeyboardInterrupt) as stop:
        train_seeds(settings, "jax", 2, runs_dir=tmp_path / "runs", dataset=dataset)
    (group,) = (tmp_path / "runs").iterdir()
    command = f"fmnist train --resume {group}"
    assert isinstance(stop.value, stopping.RunStopped)
    assert (stop.value.run_dir, stop.value.state, stop.value.resume) == (group, "interrupted", command)
    assert f"stopped: '{command}' finishes the group (its seeds not trained yet, and its summary)" in caplog.text
    [listed] = run_list.seed_groups(run_list.list_runs(tmp_path / "runs"), tmp_path / "runs")
    assert listed["scored"] == 1 and not (group / artifacts.SEED_SUMMARY).exists()


@pytest.mark.parametrize("overrides, seeds, refusal", [
    ({"seed": 2**32 - 2}, 3, r"--seeds 3 from seed 4294967294 would go up to seed 4294967296, over 2\*\*32 - 1: "
                             "start at a seed of at most 4294967293"),  # the third seed, not one the user gave
    ({"limit": 20}, 3, "cannot hold all 10 classes"),
    ({}, 1, "need 2 seeds or more"),  # one seed has no spread: its interval would be NaN, which is not JSON
    ({}, 10**9, "at most 1000"),  # a typing slip: its billion settings would fill the memory before any training
])
def test_a_group_that_would_fail_is_refused_before_its_directory_is_made(tmp_path, tiny_data, overrides, seeds,
                                                                          refusal):
    folder, sums = tiny_data
    with pytest.raises(FmnistError, match=refusal):
        train_seeds(TrainSettings(**overrides), "jax", seeds, runs_dir=tmp_path / "runs",
                    dataset=load_dataset(folder, checksums=sums))
    assert not (tmp_path / "runs").exists()


def test_a_group_that_cannot_write_its_record_leaves_no_folder_behind(tmp_path, tiny_data, full_disk_for):
    folder, sums = tiny_data
    full_disk_for(artifacts.SEED_GROUP)
    with pytest.raises(FmnistError, match=r"^cannot write .*-x2/group\.json: No space left on device$"):
        train_seeds(TrainSettings(hidden_sizes=(8,), epochs=1), "jax", 2, runs_dir=tmp_path / "runs",
                    dataset=load_dataset(folder, checksums=sums))
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_run_the_group_could_not_have_made_is_refused_in_its_folder(tmp_path, tiny_data):
    from fmnist.data import data_record
    from fmnist.train import train

    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=2, batch_size=16, name="tiny", seed=5)
    group = tmp_path / "group"
    group.mkdir()
    record = {"settings": settings.to_dict(), "backend": "jax", "seeds": 3, "data": data_record(dataset)}
    artifacts.write_json(group / artifacts.SEED_GROUP, record)
    refuse_other_runs(group, dataclasses.replace(settings, seed=9, name="mine"), "jax", dataset)  # one of its own
    refused = f"{group} is a group made by 'fmnist train --seeds', whose %s this run does not share: there the " \
              "group's resume would refuse the whole group until it was moved out; choose another --runs-dir"
    with pytest.raises(FmnistError, match=re.escape(refused % "dropout, epochs")):
        train(dataclasses.replace(settings, dropout=0.0, epochs=3), "jax", runs_dir=group, dataset=dataset)
    assert [p.name for p in group.iterdir()] == [artifacts.SEED_GROUP]  # refused before a run folder was made
    # As a group killed before its first run began: `fmnist runs` lists it with its settings and its resume.
    [listed] = [row for row in run_list.list_runs(tmp_path) if row["run"] == group.name]
    assert (listed["status"], listed["settings"]["seed"], listed["backend"]) == ("killed", 5, "jax")
    assert listed["notes"] == [f"no seed begun: fmnist train --resume {group} trains its 3 seeds"]
    other_data = dataclasses.replace(dataset, checksums={**dataset.checksums, "t10k-labels-idx1-ubyte": "0" * 64})
    with pytest.raises(FmnistError, match=re.escape(refused % "backend, data")):
        refuse_other_runs(group, settings, "tensorflow", other_data)
    # Made by a later fmnist, with a setting this one does not know: its runs could not be made the same here.
    later = {**record, "settings": {**record["settings"], "mixup_alpha": 0.2}}
    artifacts.write_json(group / artifacts.SEED_GROUP, later)
    with pytest.raises(FmnistError, match=re.escape(refused % "mixup_alpha")):
        refuse_other_runs(group, settings, "jax", dataset)
    (group / artifacts.SEED_GROUP).write_text("{cut")
    with pytest.raises(FmnistError, match="group.json is not valid JSON .*: restore it from a copy, or choose "
                                          "another --runs-dir"):
        refuse_other_runs(group, settings, "jax", dataset)
    [listed] = [row for row in run_list.list_runs(tmp_path) if row["run"] == group.name]
    assert listed["notes"] == ["group.json damaged: restore it from a copy"]
