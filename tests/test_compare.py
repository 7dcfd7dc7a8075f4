import base64
import html
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import compare_page, module_data, page_text, run_cli, tiny_train
from fmnist import artifacts, run_list, runs
from fmnist.compare import (bar_colours, group_difference, mistake_changes, run_labels,
                            runs_to_compare, settings_rows)
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.settings import RECIPES


CYCLE = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]  # matplotlib's first colours: blue, orange, green


def _pictures(page: str) -> list[np.ndarray]:
    """The page's PNGs, in order, as RGB arrays."""
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def _colour_share(picture: np.ndarray, colour: tuple[int, int, int]) -> float:
    """The share of a picture's pixels drawn in ``colour``."""
    return float(np.mean(np.all(np.abs(picture.astype(int) - colour) <= 2, axis=-1)))


def test_mistake_changes_ranks_classes_by_how_much_their_mistakes_moved():
    a = np.diag(np.full(10, 50))
    b = a.copy()
    a[6, 0], b[6, 0] = 30, 5  # Shirt taken for T-shirt/top: 30 -> 5
    a[6, 2], b[6, 2] = 4, 9  # Shirt taken for Pullover: 4 -> 9
    a[4, 2], b[4, 2] = 1, 8  # Coat taken for Pullover: 1 -> 8
    changes = mistake_changes([a, b], top=3)
    assert [c["class"] for c in changes[:2]] == ["Shirt", "Coat"]
    shirt = changes[0]
    assert shirt["mistakes"] == [34, 14] and shirt["change"] == 20
    assert shirt["most_moved"] == "T-shirt/top" and shirt["most_moved_counts"] == [30, 5]
    assert changes[1]["mistakes"] == [1, 8] and changes[1]["most_moved"] == "Pullover"
    assert len(changes) == 2  # no class whose mistakes did not move, and none "mistaken for itself"
    assert mistake_changes([a, a.copy()]) == []


def test_settings_rows_mark_only_what_differs():
    base = {"settings": {"dropout": 0.3, "hidden_sizes": [16, 8]}, "backend": "jax", "versions": {"keras": "3"}}
    other = {"settings": {"dropout": 0.1, "hidden_sizes": [16, 8]}, "backend": "jax", "versions": {"keras": "3"}}
    rows, differ = settings_rows([base, other])
    assert [rows[i][0] for i in sorted(differ)] == ["dropout"]
    assert ["hidden_sizes", "16-8", "16-8"] in rows and ["version keras", "3", "3"] in rows
    # What a run never read is "-", not a value that seems to differ (the ConvNet has no dense sizes, the cosine
    # schedule no plateau patience).
    cnn = {"settings": {"architecture": "cnn", "schedule": "cosine", "hidden_sizes": [8], "lr_patience": 9,
                        "dropout": 0.3}, "backend": "jax"}
    dense = {"settings": {"architecture": "dense", "schedule": "plateau", "hidden_sizes": [16, 8], "lr_patience": 3,
                          "dropout": 0.3}, "backend": "jax"}
    rows, differ = settings_rows([cnn, dense])
    assert ["hidden_sizes", "-", "16-8"] in rows and ["lr_patience", "-", "3"] in rows
    assert ["dropout", "0.3", "0.3"] in rows


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    with module_data(tmp_path_factory) as (base, tiny_data):
        runs_dir = base / "runs"
        yield runs_dir, [tiny_train(runs_dir, tiny_data, dropout=d, name=f"d{d}").run_dir for d in (0.3, 0.1)]


def test_compare_page_sets_two_real_runs_side_by_side(tmp_path, two_runs, caplog):
    _, (a, b) = two_runs
    (tmp_path / "out").mkdir()
    page = page_text(compare_page([a, b], tmp_path / "out" / "compare.html"))
    assert a.name in page and b.name in page
    assert "<tr class=diff><th scope=row>dropout</th><td>0.3</td><td>0.1</td></tr>" in page
    assert "<tr class=diff><th scope=row>name</th>" in page and "<tr><th scope=row>batch_size</th>" in page
    assert page.count("data:image/png;base64,") == 2
    # Which recipe each is closest to, and which epoch's weights each model has: the one its scores are of.
    kept = [artifacts.best_epoch(artifacts.read_history(run)) for run in (a, b)]
    # "spec with 3 settings changed", say: the spec's, three of its settings changed
    recipes = [run_list.summarize(run)["recipe"] for run in (a, b)]
    # Not marked as runs of other recipes: the same preset, its changes (dropout) marked in the settings' table.
    assert recipes[0] != recipes[1]
    assert f"<tr><th scope=row>recipe (closest)</th><td>{recipes[0]}</td><td>{recipes[1]}</td></tr>" in page
    best = shutil.copytree(b, tmp_path / "best")  # one of another preset: marked
    config = artifacts.read_json(best / artifacts.CONFIG)
    artifacts.write_json(best / artifacts.CONFIG, {**config, "settings": {**config["settings"], **RECIPES["best"]}})
    marked = page_text(compare_page([a, best], tmp_path / "out" / "best.html"))
    assert f"<tr class=diff><th scope=row>recipe (closest)</th><td>{recipes[0]}</td><td>best" in marked
    assert all(recipe.startswith("spec") for recipe in recipes)
    assert f"<th scope=row>epoch kept</th><td>{kept[0]}</td><td>{kept[1]}</td></tr>" in page
    # Each accuracy's interval beside it: whether the runs differ by more than the test set's own chance.
    low_high = [artifacts.read_json(run / artifacts.METRICS)["test_accuracy_ci95"] for run in (a, b)]
    assert ("<th scope=row>95% bootstrap interval</th>" + "".join(
        f"<td>{low:.4f} to {high:.4f}</td>" for low, high in low_high) + "</tr>") in page
    for run in (a, b):
        metrics = json.loads((run / artifacts.METRICS).read_text())
        for name in CLASS_NAMES:
            assert f"{metrics['per_class'][name]['f1-score']:.4f}" in page
    assert "Classes whose mistakes changed most" in page
    assert "Their losses are measured against" not in page  # both against the plain labels
    # One trained with label smoothing (its config says so, as a copy edited here): its loss has another floor.
    smoothed = shutil.copytree(b, tmp_path / "smoothed")
    config = json.loads((smoothed / artifacts.CONFIG).read_text())
    config["settings"]["label_smoothing"] = 0.1
    (smoothed / artifacts.CONFIG).write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        page = compare_page([a, smoothed], tmp_path / "out" / "compare.html").read_text()
    assert "held an earlier comparison" not in caplog.text  # the page the user named, replaced as asked
    assert (f"Their losses are measured against different targets: smoothed labels (smoothed); the plain labels "
            f"({a.name}). Compare those curves within each kind only") in page
    # What they trained and validated on, marked where it differs, as the backend is: not only in the settings.
    assert "<tr><th scope=row>backend</th><td>jax</td><td>jax</td></tr>" in page
    assert "<tr><th scope=row>validation fraction</th><td>0.2</td><td>0.2</td></tr>" in page
    assert "validation sets of different sizes" not in page
    other = shutil.copytree(b, tmp_path / "other")
    config = json.loads((other / artifacts.CONFIG).read_text())
    assert config["settings"]["limit"] is None  # all the tiny data
    config["settings"].update(limit=50, validation_fraction=0.1)
    config["backend"] = "tensorflow"
    (other / artifacts.CONFIG).write_text(json.dumps(config))
    split = np.load(other / artifacts.SPLIT)
    np.savez(other / artifacts.SPLIT, train=split["train"][:45], validation=split["validation"][:5])  # as 50 split
    page = compare_page([a, other], tmp_path / "out" / "other.html").read_text()
    assert "<tr class=diff><th scope=row>backend</th><td>jax</td><td>tensorflow</td></tr>" in page
    sizes = [len(artifacts.read_split(a, part)) for part in ("train", "validation")]  # what each split holds
    assert (f"<tr class=diff><th scope=row>images (--limit)</th><td>all: {sizes[0]} training, {sizes[1]} "
            "validation</td><td>50: 45 training, 5 validation</td></tr>") in page
    (other / artifacts.SPLIT).unlink()  # a run without its split: the flag alone
    page = compare_page([a, other], tmp_path / "out" / "other.html").read_text()
    assert "validation</td><td>50</td></tr>" in page
    assert "<tr class=diff><th scope=row>validation fraction</th><td>0.2</td><td>0.1</td></tr>" in page
    assert "Their validation curves are measured on validation sets of different sizes" in page
    # The split's counts are no difference where the --limit is the same (an older run's, without the counts).
    config["settings"].update(limit=None, validation_fraction=0.2)
    (other / artifacts.CONFIG).write_text(json.dumps(config))
    page = compare_page([a, other], tmp_path / "out" / "other.html").read_text()
    assert "<tr><th scope=row>images (--limit)</th>" in page and "validation sets of different sizes" not in page


def test_compare_command_takes_names_and_refuses_what_it_cannot_compare(tmp_path, two_runs, caplog):
    # A copy: the page and a failed run are made in the runs folder, which the module's other tests share.
    runs_dir = shutil.copytree(two_runs[0], tmp_path / "runs")
    a, b = (runs_dir / run.name for run in two_runs[1])
    done = run_cli("runs", "--runs-dir", str(runs_dir), "compare", a.name, b.name, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["comparison"] == str(runs_dir / "compare.html")
    assert (runs_dir / "compare.html").is_file()
    # Given by their paths from a folder that has no runs: the page goes beside them, no ./runs is started there.
    (tmp_path / "work").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path / "work")
        assert compare_page([a, b], None) == runs_dir / "compare.html"
        patch.chdir(runs_dir.parent)  # the runs folder given relative: the page named whole, as from any folder
        with caplog.at_level(logging.WARNING, logger="fmnist"):
            assert compare_page([a, b], None, Path(runs_dir.name)) == runs_dir / "compare.html"
        assert f"{runs_dir / 'compare.html'} held an earlier comparison: replaced by this one (--output keeps each " \
            "under a name of its own)" in caplog.text
    assert list((tmp_path / "work").iterdir()) == []
    shutil.copytree(b, tmp_path / "elsewhere" / b.name)
    linked = runs_dir / "linked"  # a run of the runs folder kept elsewhere: its page still goes in the runs folder
    linked.symlink_to(tmp_path / "elsewhere" / b.name)
    try:
        assert compare_page([a, linked], None, runs_dir) == runs_dir / "compare.html"
    finally:
        linked.unlink()

    half = runs.create_run_dir(runs_dir, "half")
    (half / artifacts.CONFIG).write_text((a / artifacts.CONFIG).read_text())
    runs.set_status(half, "failed", error="boom")
    one = run_cli("runs", "compare", "--runs-dir", str(runs_dir), a.name)  # the command line's shape: as argparse's
    assert one.returncode == 2 and one.stderr.startswith("fmnist: error: give two or more runs to compare")
    for args, fragment in (
        ((a.name, b.name, str(a)), f"{a} is given more than once: give each run to compare once"),
        ((a.name, "nope"), "no run 'nope'"),
        ((a.name, half.name), "status failed"),
        ((a.name, b.name, "--output", str(b / "compare.html")), "is inside the run"),
        ((a.name, b.name, "--output", str(tmp_path / "notes.txt")), "it is written as HTML; name it notes.html"),
        ((str(a), str(tmp_path / "elsewhere" / b.name)), "the runs lie in different folders: name the page with "
                                                         "--output"),
    ):
        result = run_cli("runs", "compare", "--runs-dir", str(runs_dir), *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("fmnist: error:") and fragment in result.stderr, result.stderr


def test_a_run_not_yet_scored_has_its_settings_and_curves_compared(tmp_path, two_runs, tiny_data, caplog):
    import keras

    class CtrlCAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    _, (a, b) = two_runs
    with pytest.raises(KeyboardInterrupt):
        tiny_train(tmp_path / "runs", tiny_data, epochs=4, name="cut", extra_callbacks=(CtrlCAfterTwoEpochs(),))
    [cut] = (tmp_path / "runs").iterdir()
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        page = compare_page([a, cut], tmp_path / "page.html").read_text()
    said = (f"{cut} has not finished training (status interrupted), so it has no test metrics for comparing its F1 "
            f"and mistakes; '{runs.resume_command(cut)}' finishes it")
    assert f"{said}: the page compares its settings and learning curves, not its scores" in caplog.text
    assert html.escape(f"{said}: its settings and learning curves are compared, not its scores.") in page
    assert "<tr><th scope=row>test accuracy</th><td>" in page and "</td><td>-</td></tr>" in page
    assert re.search(r"<th scope=row>95% bootstrap interval</th><td>[0-9.]+ to [0-9.]+</td><td>-</td>", page)
    assert "<th scope=row>status</th><td>finished</td><td>interrupted</td>" in page
    assert page.count("data:image/png;base64,") == 2  # the curves of both, a's F1 bars
    assert f"<tr><th>class</th><th>{a.name}</th></tr>" in page  # the F1 table: the run scored (no range of one)
    assert "Fewer than two of these runs are scored" in page
    page = compare_page([cut, a, b], tmp_path / "three.html").read_text()  # the scored two's F1, side by side
    assert f"<tr><th>class</th><th>{a.name}</th><th>{b.name}</th><th>range</th></tr>" in page
    assert "Fewer than two" not in page and page.count("data:image/png;base64,") == 2
    # Each run one colour in both charts: a and b keep the curves' second and third in the F1 bars, not the first.
    curves, bars = ([_colour_share(picture, colour) for colour in CYCLE[:3]] for picture in _pictures(page))
    assert all(share > 0.0003 for share in curves) and bars[0] == 0 and bars[1] > 0.01 and bars[2] > 0.01
    (cut / artifacts.HISTORY).write_text((cut / artifacts.HISTORY).read_text().splitlines()[0] + "\n")
    (cut / artifacts.BACKUP).unlink()  # as a run killed in its first epoch has none
    not_begun = f"{said}; and no epoch of it has finished, so it has no curves to compare either"
    with pytest.raises(FmnistError, match=re.escape(not_begun)):  # nothing to set beside a
        compare_page([a, cut], tmp_path / "page.html")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fmnist"):  # beside two others, it is left out, not the comparison
        page = compare_page([a, cut, b], tmp_path / "page.html").read_text()
    assert f"{not_begun}: left out of the comparison" in caplog.text
    assert html.escape(f"{not_begun}: left out of this page.") in page
    assert f"<tr><th>run</th><th>{a.name}</th><th>{b.name}</th></tr>" in page


def test_compare_refuses_a_metrics_file_from_an_older_version(tmp_path, two_runs):
    _, (a, b) = two_runs
    old = shutil.copytree(b, tmp_path / "old")  # the shared runs stay as they are
    (old / artifacts.METRICS).write_text(json.dumps({"test_accuracy": 0.5}))
    with pytest.raises(FmnistError, match="lacks per-class metrics"):
        compare_page([a, old], tmp_path / "c.html")


def test_a_metrics_or_history_file_edited_out_of_shape_is_named_with_what_to_do(tmp_path, two_runs):
    _, (a, b) = two_runs
    metrics = artifacts.read_json(b / artifacts.METRICS)
    shirtless = {name: scores for name, scores in metrics["per_class"].items() if name != "Shirt"}
    for edit in ({"per_class": shirtless}, {"confusion_matrix": [[1, 2], [3, 4]]}, {"confusion_matrix": "x"},
                 {"confusion_matrix": [[10**20] * 10] * 10},  # past int64
                 {"per_class": {**metrics["per_class"], "Shirt": {"f1-score": float("nan")}}},
                 {"per_class": {**metrics["per_class"], "Bag": {"f1-score": 1.5}}}):
        edited = shutil.copytree(b, tmp_path / f"edited-{len(list(tmp_path.iterdir()))}")
        (edited / artifacts.METRICS).write_text(json.dumps({**metrics, **edit}))  # NaN as Python's json writes it
        with pytest.raises(FmnistError, match=f"{edited / artifacts.METRICS} is damaged .*: run 'fmnist evaluate "
                                              f"{edited}' to write it again"):
            compare_page([a, edited], tmp_path / "c.html")
    cut = shutil.copytree(b, tmp_path / "cut")
    (cut / artifacts.METRICS).write_text("[]")  # as the report says it
    with pytest.raises(FmnistError, match=f"{cut / artifacts.METRICS} is damaged: it holds a JSON list, not the object "
                                          f"fmnist wrote: run 'fmnist evaluate {cut}' to write it again$"):
        compare_page([a, cut], tmp_path / "c.html")
    shutil.copy(b / artifacts.METRICS, cut)
    (cut / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n")  # a history without its other columns
    with pytest.raises(FmnistError, match=f"{cut / artifacts.HISTORY} is damaged \\(no .*val_loss.*\\): restore it "
                                          "from a copy \\(the comparison draws each run's learning curves\\)$"):
        compare_page([a, cut], tmp_path / "c.html")
    assert not (tmp_path / "c.html").exists()


def test_runs_sharing_a_folder_name_keep_their_own_columns(tmp_path, two_runs):
    _, (a, b) = two_runs
    copy = shutil.copytree(b, tmp_path / "elsewhere" / a.name)  # b's results under a's name
    page = page_text(compare_page([a, copy], tmp_path / "c.html"))
    assert f"<th>1: {a.name}</th><th>2: {a.name}</th>" in page
    assert f"<tr><th scope=row>directory</th><td>{a.resolve()}</td><td>{copy.resolve()}</td></tr>" in page
    f1 = [json.loads((run / artifacts.METRICS).read_text())["per_class"] for run in (a, b)]
    cells = [[f"{scores[c]['f1-score']:.4f}" for scores in f1] for c in CLASS_NAMES]
    assert any(x != y for x, y in cells)  # else the page could not show one run's F1 twice
    for c, (x, y) in zip(CLASS_NAMES, cells):  # each run's F1 in its own column
        assert f"<tr><th scope=row>{html.escape(c)}</th><td>{x}</td><td>{y}</td>" in page


def test_a_seed_group_stands_for_the_runs_its_summary_averages(tmp_path, two_runs, caplog, capsys):
    runs_dir, (a, b) = two_runs
    group = tmp_path / "runs" / "20261206T000000Z-grp"  # as 'fmnist train --seeds 2' leaves it, its runs copied in
    members = [shutil.copytree(run, group / run.name) for run in (a, b)]
    artifacts.write_json(group / artifacts.SEED_GROUP, {"seeds": 2, "settings": {}, "backend": "jax"})
    with pytest.raises(FmnistError, match=f"{group} is a --seeds group with no summary.json yet: 'fmnist train "
                                          f"--resume {group}' finishes it; or give its runs one by one"):
        runs_to_compare([group], runs_dir)
    page = compare_page([members[0], a], tmp_path / "unfinished.html").read_text()  # one of its runs, given itself
    assert f"<th scope=row>--seeds group</th><td>{group.name}</td><td>-</td></tr>" in page  # it says whose it is
    assert "<h2>--seeds groups" not in page  # ... but stands for itself: no group's mean in its place
    artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [{"run_dir": "../elsewhere"}]})
    with pytest.raises(FmnistError, match="summary.json is damaged \\(no list of two or more run folders\\)"):
        runs_to_compare([group], runs_dir)
    artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [{"run_dir": run.name} for run in members[:1]]})
    with pytest.raises(FmnistError, match="summary.json is damaged \\(no list of two or more run folders\\)"):
        runs_to_compare([group], runs_dir)  # one seed's alone: a group has two or more
    artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [{"run_dir": run.name} for run in members[::-1]]})
    assert runs_to_compare([group, a], runs_dir) == [members[1], members[0], a]  # the runs its mean is over
    per_class = {name: {"mean": 0.5, "std": 0.01} for name in CLASS_NAMES}
    artifacts.write_json(group / artifacts.SEED_SUMMARY, {
        "runs": [{"run_dir": run.name} for run in members], "seeds": 2, "per_class_f1": per_class,
        "test_accuracy": {"values": [0.81, 0.83], "mean": 0.82, "std": 0.0141, "ci95": [0.6929, 0.9471]}})
    assert runs_to_compare([group.name], group.parent) == members  # by name too
    with pytest.raises(FmnistError, match=f"^{members[0].name} is one of the runs of the --seeds group {group.name}, "
                                          "also given: give the group or its runs, not both$"):
        runs_to_compare([group, members[0]], runs_dir)
    with pytest.raises(FmnistError, match=f"^{members[0]} is given more than once"):  # the group twice: as any run
        compare_page([group, group], tmp_path / "twice.html")
    page = compare_page([members[1], a], tmp_path / "one-seed.html").read_text()  # a finished group's run alone
    assert "<h2>--seeds groups" not in page and f"<title>fmnist: {group.name} seed " in page
    result = run_cli("runs", "compare", group.name, "--runs-dir", str(group.parent), "--json")  # one group is enough
    assert result.returncode == 0, result.stderr
    page = Path(json.loads(result.stdout)["comparison"]).read_text()
    assert all(run.name in page for run in members)
    assert f"<th scope=row>--seeds group</th><td>{group.name}</td><td>{group.name}</td></tr>" in page
    assert f"<title>fmnist: {group.name}</title>" in page  # the group once, not each of its runs
    assert (f"<tr><th scope=row>{group.name}</th><td>2</td><td>0.8200 ± 0.0141</td><td>0.6929 to 0.9471</td>"
            "<td>0.5000</td></tr>") in page  # the group's mean over all its seeds, as its summary.json has it
    assert ('<img alt="F1 per class, one bar per group: the mean over its seeds, whiskers one standard deviation"'
            in page)
    assert "--seeds group" not in compare_page([a, b], tmp_path / "plain.html").read_text()  # none in a group
    # A group against a run given alone: the run set beside the group's mean, as itself, in its table and chart.
    given = runs_to_compare([group, a], runs_dir)
    page = compare_page(given, tmp_path / "beside.html").read_text()
    alone, scores = run_labels(given)[-1], artifacts.read_json(a / artifacts.METRICS)
    assert (f"<tr><th scope=row>{alone}</th><td>1 (a run alone)</td><td>{scores['test_accuracy']:.4f}</td><td>-</td>"
            f"<td>{scores['macro_f1']:.4f}</td></tr>") in page
    assert "<h2>--seeds groups (over all their seeds), beside the runs given alone</h2>" in page
    assert "whiskers one standard deviation; a run given alone, its own F1" in page
    group_chart = _pictures(page)[0]  # in the colours the curves give the group's first run and the run alone
    assert [_colour_share(group_chart, colour) > 0.01 for colour in CYCLE] == [True, False, True]
    refused = run_cli("runs", "compare", str(a))  # one run is not
    assert refused.returncode == 2 and "give two or more runs to compare, or a --seeds group" in refused.stderr
    # One group by its folder's name after its time (its group.json records no --name), the only one: the group.
    by_short_name = run_cli("runs", "compare", "grp", "--runs-dir", str(group.parent), "--output",
                            str(tmp_path / "short.html"))
    assert by_short_name.returncode == 0, by_short_name.stderr
    assert by_short_name.stderr.count(f"grp: {group}, the only one of that group name") == 1  # looked up once
    # Two groups: their difference said; a group whose summary's accuracies are damaged gets one row, so saying.
    other = shutil.copytree(group, group.with_name("20261206T010000Z-grp2"))
    record = artifacts.read_json(other / artifacts.SEED_SUMMARY)
    artifacts.write_json(other / artifacts.SEED_SUMMARY, {
        **record, "test_accuracy": {**record["test_accuracy"], "values": [0.85, 0.87]}})
    page = compare_page([group, other], tmp_path / "groups.html", runs_dir).read_text()
    said = f"{other.name} minus {group.name}: test accuracy +0.0400, 95% interval"
    assert said in page
    # The command's result: on stdout (kept under -q), and its figures under --json, for a script.
    from fmnist.cli import main

    caplog.clear()
    assert main(["-q", "runs", "compare", group.name, other.name, "--runs-dir", str(group.parent)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(said) and said not in caplog.text
    assert main(["runs", "compare", group.name, other.name, "--runs-dir", str(group.parent), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["group_difference"]["text"].startswith(said)
    assert result["comparison"] == str(group.parent / artifacts.COMPARISON_HTML)
    assert result["group_difference"]["test_accuracy_difference"] == pytest.approx(0.04)
    artifacts.write_json(other / artifacts.SEED_SUMMARY, {
        **record, "test_accuracy": {**record["test_accuracy"], "values": [0.85, "x"]}})
    page = compare_page([group, other], tmp_path / "groups.html", runs_dir).read_text()
    assert page.count(f"<tr><th scope=row>{other.name}</th>") == 1 and "summary.json damaged" in page
    assert " minus " not in page


def test_two_groups_difference_is_given_with_welchs_interval_and_what_it_says():
    from scipy import stats

    a, b = [0.885, 0.889, 0.884, 0.887], [0.893, 0.897, 0.894]
    said = group_difference({"grpA": a, "grpB": b})
    # Welch's interval, from its formula: each mean's variance over its seeds, the Welch-Satterthwaite degrees.
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * np.sqrt(va + vb)
    difference = np.mean(b) - np.mean(a)
    assert said["text"].startswith(f"grpB minus grpA: test accuracy {difference:+.4f}, 95% interval "
                                   f"{difference - half:+.4f} to {difference + half:+.4f} (Welch's t over their "
                                   f"seeds, p = {said['p_value']:.3g}): grpB is better beyond what their seeds vary by")
    assert said["ci95"] == pytest.approx([difference - half, difference + half])
    assert (said["first"], said["second"], said["test_accuracy_difference"]) == ("grpA", "grpB", pytest.approx(
        difference)) and 0 < said["p_value"] < 0.05
    assert group_difference({"grpA": a, "grpB": [0.88, 0.895]})["verdict"] == "their seeds do not tell the two apart"
    assert group_difference({"grpA": b, "grpB": a})["text"].endswith(": grpA is better beyond what their seeds vary by")
    assert group_difference({"grpA": a}) is group_difference({"grpA": a, "grpB": b, "grpC": a}) is None
    assert "no spread" in group_difference({"grpA": [0.9, 0.9], "grpB": [0.9, 0.9]})["text"]


def test_a_groups_runs_are_labelled_by_group_and_seed_as_they_share_one_name(tmp_path, two_runs):
    _, (a, b) = two_runs
    group = tmp_path / "20261206T000000Z-grp-x2"
    members = [shutil.copytree(run, group / f"2026120{i}T000000Z-grp") for i, run in enumerate((a, b))]
    artifacts.write_json(group / artifacts.SEED_GROUP, {"seeds": 2, "settings": {}, "backend": "jax"})
    for seed, member in enumerate(members, 7):
        config = artifacts.read_json(member / artifacts.CONFIG)
        artifacts.write_json(member / artifacts.CONFIG, {**config, "settings": {**config["settings"], "seed": seed}})
    assert run_labels([*members, a]) == [f"{group.name} seed 7", f"{group.name} seed 8", a.name]


def test_each_group_keeps_its_first_runs_colour_unless_two_bars_would_share_one():
    from fmnist.plots import run_colours

    runs_of = [f"a seed {s}" for s in range(5)] + [f"b seed {s}" for s in range(5)] + ["alone"]
    colours = run_colours(runs_of)
    assert bar_colours(["a", "b"], {"a": "a seed 0", "b": "b seed 0"}, colours) == {
        "a": colours["a seed 0"], "b": colours["b seed 0"]}
    # The eleventh run comes round to the first's colour: the bars take the plain cycle, each its own.
    shared = bar_colours(["a", "b", "alone"], {"a": "a seed 0", "b": "b seed 0"}, colours)
    assert len(set(map(str, shared.values()))) == 3
