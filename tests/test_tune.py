import copy
import dataclasses
import html
import glob
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path

import optuna
import pytest

from conftest import refused_before_keras
from fmnist import artifacts, defaults, report, run_list
from fmnist.cli import _settings_from_args, build_parser
from fmnist.data import load_dataset
from fmnist.errors import FmnistError, UsageError
from fmnist.settings import TrainSettings
from fmnist.tune import (
    TuneResult, _cut_short_run, _objective, open_study, settings_for, suggest, train_best, trial_name,
    summary, trial_params, trial_state, tune,
)
from fmnist.tune_report import _train_command, write_report
from fmnist.tune_storage import open_storage, worker_key

BASE = TrainSettings(epochs=2, early_stopping_patience=5, lr_patience=1)


@pytest.fixture
def dataset(tiny_data):
    folder, sums = tiny_data
    return load_dataset(folder, checksums=sums)


def test_sqlite_study_makes_one_run_per_trial_judged_on_validation_and_continues(tmp_path, dataset, monkeypatch):
    storage, runs = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "my runs"  # a space, to be quoted
    first = tune(BASE, "jax", 1, "s1", storage=storage, runs_dir=runs, dataset=dataset)
    assert first.trials_run == 1 and first.states == {"complete": 1}
    again = tune(BASE, "jax", 1, "s1", storage=storage, runs_dir=runs, dataset=dataset)
    assert again.trials_run == 1 and again.states == {"complete": 2}

    trials = optuna.load_study(study_name="s1", storage=storage).trials
    assert [t.number for t in trials] == [0, 1]
    assert trials[0].params == trial_params(BASE)  # the recipe's own settings come first
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert sorted(run_dirs) == sorted(p.resolve() for p in (runs / "s1").iterdir())  # one run per trial, no more
    # `fmnist runs` gives the study's folder a line, its trials' runs under it.
    listed = run_list.format_runs(run_list.list_runs(runs), [], runs).splitlines()
    assert listed[1].startswith("s1/ ") and listed[1].endswith("study s1: 2 trial runs")
    under = [line.split()[0] for line in listed[2:] if not line.startswith(run_list.NOTE_INDENT)]  # notes aside
    assert sorted(under) == sorted(run.name for run in run_dirs)
    for trial, run in zip(trials, run_dirs):
        config = json.loads((run / artifacts.CONFIG).read_text())
        assert config["settings"] == settings_for(BASE, trial.params, f"trial-{trial.number:04d}").to_dict()
        assert json.loads((run / artifacts.STATUS).read_text())["state"] == "finished"
        history = artifacts.read_history(run)
        assert trial.value == min(history["val_loss"])  # the validation split, not the test set
        assert trial.intermediate_values == dict(enumerate(history["val_loss"]))
    assert again.best["number"] == min(trials, key=lambda t: t.value).number

    monkeypatch.chdir(tmp_path)  # the study and folder given relative to it ...
    html = write_report("s1", storage="sqlite:///study.db", runs_dir=Path("my runs")).read_text()
    # ... and the page's commands, pasted into a shell in any folder, reach this study and this runs folder.
    train_best_command, train_command = (shlex.split(unescape(command))[1:]
                                         for command in re.findall(r"<pre>(fmnist [^<]*)</pre>", html))
    pasted = build_parser().parse_args(train_best_command)
    assert (pasted.train_best, pasted.storage, pasted.runs_dir) == ("s1", storage, runs)
    # Its own `fmnist train` command gives the best trial's settings and the study's patience too, on the spec's
    # budget, as --train-best; checked for both trials, since only the second has the sampler's many-digit values.
    pasted = build_parser().parse_args(train_command)
    assert pasted.runs_dir == runs and pasted.backend == "jax"  # the trials' backend, as tuned
    full = dataclasses.replace(BASE, epochs=TrainSettings().epochs)
    assert _settings_from_args(pasted) == settings_for(full, trials[again.best["number"]].params, "s1-best")
    study = optuna.load_study(study_name="s1", storage=storage)
    for trial in trials:
        elsewhere = copy.deepcopy(trial)  # its run on another machine of the study's, or deleted
        elsewhere.user_attrs = {**trial.user_attrs, "run_dir": str(tmp_path / "gone")}
        for seen in (trial, elsewhere):
            args = build_parser().parse_args(_train_command(study, seen, Path(runs) / "s1").split()[1:])
            assert _settings_from_args(args) == settings_for(full, trial.params, "s1-best")
    for title in ("Optimisation history", "Parameter importances", "Timeline"):
        assert title in html
    assert "<p>not drawn: 2 finished trials, where importances mean something from about" in html  # said once
    # Each trial's backend beside its run: a study's workers may train on either.
    assert "<th>backend</th><th>run</th>" in html and html.count("<td>jax</td><td>") == len(trials)
    assert html.count('class="plotly-graph-div"') >= 4 and "plotly.js" in html  # inline: works offline

    best = train_best("s1", {"epochs": 2}, "jax", storage=storage, runs_dir=runs, dataset=dataset)
    best_config = json.loads((best.run_dir / artifacts.CONFIG).read_text())
    assert best_config["settings"] == settings_for(BASE, trials[again.best["number"]].params, "s1-best").to_dict()
    # Without --backend, the best trial's own is started: here, in a process already on JAX, TensorFlow is refused.
    study.add_trial(optuna.trial.create_trial(params=trials[0].params, distributions=trials[0].distributions,
                                              value=-1.0, user_attrs={"backend": "tensorflow"}))
    with pytest.raises(FmnistError, match="Keras is already running on jax in this process; start a new process "
                                          "for tensorflow"):
        train_best("s1", {"epochs": 2}, None, storage=storage, runs_dir=runs, dataset=dataset)


def test_a_journal_studys_trials_report_and_commands_go_beside_it_not_in_the_current_folder(tmp_path, dataset,
                                                                                             monkeypatch):
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    journal = str(elsewhere / "tune.journal")
    # Given from here, with no --runs-dir: the trials go in the journal's folder; --json names it absolute.
    result = tune(BASE, "jax", 1, "s1", storage="../elsewhere/tune.journal", dataset=dataset)
    assert result.storage == journal
    # The summary's closing commands, pasted, reach this study.
    report_command, best_command = (shlex.split(line.removeprefix("next:").strip().split("   ")[0])[1:]
                                    for line in summary(result).splitlines()[-2:])
    for command, mode in ((report_command, "report"), (best_command, "train_best")):
        pasted = build_parser().parse_args(command)
        assert (getattr(pasted, mode), pasted.storage) == ("s1", journal)
    # What the best's command trains as given: said, as it takes minutes.
    assert f"the best on every training image for up to {TrainSettings().epochs} epochs, as long as a full 'fmnist " \
           "train' (add --epochs 2 to train it as its trial did)" in summary(result)  # the study's trials had 2
    # The command with what it says to add trains the trial's budget.
    added = build_parser().parse_args([*best_command, "--epochs", "2"])
    assert (added.train_best, added.epochs) == ("s1", 2)
    # A database's URL is shown without its password: the commands ask for it, rather than print one that fails.
    masked = dataclasses.replace(result, storage="postgresql://me:***@db/optuna")
    assert "--report s1 --storage URL " in summary(masked) and "***" not in summary(masked).split("next:")[1]
    (run,) = (elsewhere / "s1").iterdir()
    page = write_report("s1", storage=journal)
    assert page == elsewhere / "s1" / artifacts.TUNE_REPORT and not any(here.iterdir())
    store, shown = open_storage(journal, tmp_path)
    (trial,) = optuna.load_study(study_name="s1", storage=store).trials
    for command in re.findall(r"<pre>(fmnist [^<]*)</pre>", page.read_text()):
        pasted = build_parser().parse_args(shlex.split(unescape(command))[1:])
        assert pasted.runs_dir == elsewhere
        # Either command, pasted as it is, trains the best trial's settings with the study's patience, on the spec's
        # budget, as tune's closing lines' command does.
        full = dataclasses.replace(BASE, epochs=TrainSettings().epochs)
        assert settings_for(_settings_from_args(pasted), trial.params, "s1-best") == settings_for(full, trial.params,
                                                                                                 "s1-best")
    # ... as the page says, with what to add to train as the trial did, in the words of tune's closing lines.
    assert (f"<p>Each trains the best trial's settings on every training image for up to {TrainSettings().epochs} "
            "epochs, as long as a full 'fmnist train' (add --epochs 2 to train it as its trial did).</p>"
            ) in page.read_text()

    # A study whose trials were given another --runs-dir: its page and best run go where they ran.
    other = shutil.copytree(run, tmp_path / "other" / "s2" / run.name)
    open_study("s2", store, shown, BASE).add_trial(optuna.trial.create_trial(
        params=trial.params, distributions=trial.distributions, value=0.5, user_attrs={"run_dir": str(other)}))
    assert write_report("s2", storage=journal) == tmp_path / "other" / "s2" / artifacts.TUNE_REPORT
    assert not any(here.iterdir())


def test_a_trial_the_pruner_gives_up_on_stops_and_is_recorded_as_pruned_but_not_at_its_last_epoch(tmp_path, dataset,
                                                                                                   monkeypatch):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any val_loss prunes
    settings = TrainSettings(epochs=4, early_stopping_patience=5)
    drawn = []
    draw = report._write_report
    monkeypatch.setattr(report, "_write_report", lambda run_dir, *args: drawn.append(run_dir) or draw(run_dir, *args))
    study.optimize(_objective(settings, "jax", tmp_path, dataset), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    history = artifacts.read_history(Path(trial.user_attrs["run_dir"]))
    assert len(history["loss"]) == 1 and trial.intermediate_values == {0: history["val_loss"][0]}
    # Recorded with the run it was pruned in, its own, for a retry that finishes some attempt's run.
    assert (trial.user_attrs["pruned_at"], trial.user_attrs["run_of"]) == (0, trial.number)
    # Its run says so wherever it is read, not as one that ran its course.
    run_dir = Path(trial.user_attrs["run_dir"])
    said = f"pruned by study {study.study_name!r} after epoch 1"
    assert artifacts.read_json(run_dir / artifacts.STATUS)["pruned"] == said[len("pruned "):]
    [row] = [r for r in run_list.list_runs(tmp_path) if r["run"] == run_dir.name]
    assert row["status"] == "finished" and said in row["notes"]
    assert f"finished, {html.escape(said)}" in (run_dir / artifacts.REPORT_HTML).read_text()
    assert drawn == [run_dir]  # once, the pruning already in the status it reads
    # Not at its last epoch: stopping there saves nothing, and the trial ran all its epochs.
    study.optimize(_objective(dataclasses.replace(settings, epochs=1), "jax", tmp_path, dataset), n_trials=1)
    assert study.trials[1].state == optuna.trial.TrialState.COMPLETE


def test_a_study_or_storage_that_cannot_be_used_is_refused_before_keras_starts(tmp_path):
    commands = [["tune", "--train-best", "typo", "--runs-dir", str(tmp_path)],
                ["tune", "--study", "a/b", "--runs-dir", str(tmp_path)],
                ["tune", "--storage", "sqlite://", "--runs-dir", str(tmp_path)]]
    said = refused_before_keras(commands)
    for refusal in ("no study 'typo': there is no journal", "study name 'a/b' may hold only",
                    "sqlite:// keeps the study in memory"):
        assert f"fmnist: error: {refusal}" in said


@pytest.mark.filterwarnings("ignore:Fixed parameter learning_rate")  # Optuna's: 1e30 is outside the searched range
def test_a_trial_that_diverges_is_recorded_and_the_study_goes_on(tmp_path, dataset, caplog):
    diverging = dataclasses.replace(BASE, learning_rate=1e30)  # the recipe's own settings are the first trial
    with caplog.at_level(logging.WARNING, logger="fmnist.tune"):
        result = tune(diverging, "jax", 2, "s1", runs_dir=tmp_path, dataset=dataset)
    assert result.trials_run == 2 and result.states == {"diverged": 1, "complete": 1}
    store, _ = open_storage(None, tmp_path)
    first = optuna.load_study(study_name="s1", storage=store).trials[0]
    assert re.fullmatch(r"training diverged in epoch \d: the loss became nan", first.user_attrs["diverged"])
    assert f"trial 0: {first.user_attrs['diverged']}; recorded as failed, the study goes on" in caplog.text
    assert "--learning-rate" not in caplog.text  # a flag tune does not have: it searches the learning rate


@pytest.mark.parametrize("when", ["while it trained", "once it was trained"])
def test_a_trial_another_worker_failed_meanwhile_ends_this_worker_in_one_line_its_run_kept(tmp_path, dataset,
                                                                                            monkeypatch, when):
    from fmnist import tune as tune_module

    store, _ = open_storage(None, tmp_path)

    def failed_elsewhere(number):  # as by a worker that found this one's heartbeat stale
        optuna.load_study(study_name="s1", storage=store).tell(number, state=optuna.trial.TrialState.FAIL)

    def drawn_then_failed_elsewhere(trial, base):  # this worker writes to the trial afterwards
        suggest(trial, base)
        failed_elsewhere(trial.number)

    def failed_elsewhere_once_trained(trial, *args):  # nothing written to it afterwards, its result not yet told
        value = run_trial(trial, *args)
        failed_elsewhere(trial.number)
        return value

    if when == "while it trained":
        monkeypatch.setattr(tune_module, "suggest", drawn_then_failed_elsewhere)
    else:
        run_trial = tune_module._run_trial
        monkeypatch.setattr(tune_module, "_run_trial", failed_elsewhere_once_trained)
    with pytest.raises(FmnistError, match=r"^trial 0 was failed by another worker of the study, to which this worker "
                                          r"seemed gone .*: its run is kept, and the trial queued in its place "
                                          r"finishes it; run this command again to go on$"):
        tune(BASE, "jax", 1, "s1", runs_dir=tmp_path, dataset=dataset)
    (run,) = (tmp_path / "s1").iterdir()
    status = json.loads((run / artifacts.STATUS).read_text())
    if when == "while it trained":
        assert status["resume"] == f"fmnist train --resume {run}"
    else:  # finished and scored: the trial queued in its place counts it as it is
        assert status["state"] == "finished" and (run / artifacts.METRICS).is_file()


def test_a_trials_own_value_error_is_not_taken_for_another_workers_doing(tmp_path, dataset, monkeypatch):
    from fmnist import tune as tune_module

    def broken(trial, base):
        raise ValueError("a bug of ours")

    monkeypatch.setattr(tune_module, "suggest", broken)
    with pytest.raises(ValueError, match="^a bug of ours$"):  # the CLI's last guard: "unexpected ValueError"
        tune(BASE, "jax", 1, "s1", runs_dir=tmp_path, dataset=dataset)


def _postgres_program(name: str) -> str:
    """Debian keeps PostgreSQL's server programs off PATH, in /usr/lib/postgresql/<version>/bin."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is missing: run 'bash scripts/setup.sh' (installs Debian's postgresql)")
    return found


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server in a temporary folder, reached by its Unix socket there alone (no TCP port, which
    a test beside it could take between its choice and the server's start), stopped and removed after the test."""
    initdb, pg_ctl = _postgres_program("initdb"), _postgres_program("pg_ctl")
    # initdb and the server refuse to run as root: run them as Debian's postgres user then.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    if as_owner:
        shutil.chown(folder, "postgres")
    data = folder / "data"

    def postgres(*args: str) -> None:
        subprocess.run(as_owner + list(args), cwd=folder, check=True, capture_output=True, timeout=120)

    postgres(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    postgres(pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
             f"-k {folder} -c listen_addresses='' -c fsync=off", "start")
    try:
        import psycopg

        with psycopg.connect(host=str(folder), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE fmnist")
        yield f"postgresql://postgres@/fmnist?host={folder}"
    finally:
        postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder)


@pytest.mark.realdata
def test_two_workers_share_a_postgresql_study_and_record_each_trial_once(tmp_path, postgres_url):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "fmnist", "tune", "--study", "pg", "--storage", postgres_url, "--trials", "1",
               "--limit", "400", "--epochs", "2", "--runs-dir", str(runs), "--json"]
    # Started together, as a cluster would: both race to create the tables and the study on a fresh database.
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
        assert json.loads(out)["trials_run"] == 1

    trials = optuna.load_study(study_name="pg", storage=postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1]
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    run_dirs = sorted(Path(t.user_attrs["run_dir"]) for t in trials)
    assert run_dirs == sorted(p.resolve() for p in (runs / "pg").iterdir())  # one run per trial: none lost, none twice
    names = {json.loads((run / artifacts.CONFIG).read_text())["settings"]["name"] for run in run_dirs}
    assert names == {trial_name(n) for n in range(2)}
    # The two workers really overlapped: some trial started before another one ended.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))

    assert "Timeline" in write_report("pg", storage=postgres_url, runs_dir=runs).read_text()


def test_output_without_report_is_refused_before_any_trial(tmp_path, capsys):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["tune", "--trials", "1", "--output", str(tmp_path / "page.html"), "--runs-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert "--output names the page that --report STUDY writes" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_study_inside_a_run_is_refused_before_any_journal_or_trial(tmp_path, dataset, tiny_run_dir):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(FmnistError, match="inside the run"):
        tune(BASE, "jax", 1, "s", runs_dir=run, dataset=dataset)
    with pytest.raises(FmnistError, match="the study's journal folder .* is inside the run"):
        tune(BASE, "jax", 1, "s", storage=str(run / "tune.journal"), runs_dir=tmp_path / "runs", dataset=dataset)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    with pytest.raises(FmnistError,
                       match="--study notes.txt: its trials' runs go in the folder .* but a file is there"):
        tune(BASE, "jax", 1, "notes.txt", runs_dir=tmp_path / "runs", dataset=dataset)
    (tmp_path / "runs" / "group").mkdir()
    artifacts.write_json(tmp_path / "runs" / "group" / artifacts.SEED_GROUP, {"seeds": 3})  # its first trial failed
    with pytest.raises(FmnistError, match="--study group: .* is a group made by 'fmnist train --seeds'; choose"):
        tune(BASE, "jax", 1, "group", runs_dir=tmp_path / "runs", dataset=dataset)
    with pytest.raises(FmnistError, match="is 196 bytes long: at most 195, as the best trial's run is named after"):
        tune(BASE, "jax", 1, "s" * 196, runs_dir=tmp_path / "runs", dataset=dataset)  # --train-best refused it
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["group", "notes.txt"]  # no journal, no study
    with pytest.raises(FmnistError, match="the study's database folder .* is inside the run"):
        tune(BASE, "jax", 1, "s", storage=f"sqlite:///{run / 'study.db'}", runs_dir=tmp_path / "runs", dataset=dataset)
    assert sorted(p.name for p in run.iterdir()) == before
    with pytest.raises(FmnistError, match="for validation"):  # the split every trial would fail on
        tune(dataclasses.replace(BASE, validation_fraction=0.01), "jax", 1, "s", runs_dir=tmp_path / "r",
             dataset=dataset)
    assert not (tmp_path / "r").exists()


def test_a_stopped_train_best_or_study_says_on_stdout_what_to_resume(tmp_path, capsys, monkeypatch):
    from fmnist import stopping, tune as tune_module
    from fmnist.cli import main

    run_dir = tmp_path / "runs" / "20261206T000000Z-s-best"
    command = f"fmnist train --resume {run_dir}"

    def stopped(*args, **kwargs):  # as train() raises it when a Ctrl-C stops the run it trains
        raise stopping.RunStopped(run_dir, "interrupted", command)

    monkeypatch.setattr(tune_module, "train_best", stopped)
    assert main(["tune", "--train-best", "s", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 130
    assert json.loads(capsys.readouterr().out) == {"state": "interrupted", "run_dir": str(run_dir), "resume": command}
    # A study's trial stopped so: its study named too, which the same tune command continues, finishing the run.
    monkeypatch.setattr(tune_module, "tune", stopped)
    assert main(["tune", "--study", "s", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 130
    assert json.loads(capsys.readouterr().out) == {"state": "interrupted", "run_dir": str(run_dir), "resume": command,
                                                   "study": "s", "continue_study": "the same 'fmnist tune' command"}


@pytest.mark.parametrize("flags, message", [
    (["--timeout", "-5"], "must be a positive, finite number of seconds"),
    (["--timeout", "nan"], "must be a positive, finite number of seconds"),
    (["--report", "s", "--epochs", "3", "--trials", "7", "--study", "t"],
     "--report only draws the study it names as it is; drop --epochs, --trials, --study"),
    (["--train-best", "s", "--trials", "7", "--study", "t"],
     "--train-best trains one run of the study it names; drop --trials, --study"),
    (["--report", "s", "--epochs", "3", "--study", "s"], "--report only draws the study it names as it is; drop "
                                                          "--epochs (see"),  # the same study named twice is not refused
    *((["--trials", "1", flag, ""], f"argument {flag}: empty (an unset shell variable?)")
      for flag in ("--study", "--storage", "--report", "--train-best")),
])
def test_tune_flags_it_would_ignore_or_cannot_use_are_refused(tmp_path, capsys, flags, message):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as refused:  # as argparse refuses a command line
        main(["tune", *flags, "--runs-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("params", [
    {"dropout": 0.2},  # no hidden_sizes
    {**trial_params(BASE), "x": 1},  # a parameter fmnist does not have
    {**trial_params(BASE), "hidden_sizes": "512-256"},
])
def test_a_trial_another_program_wrote_is_refused_by_its_parameters(params):
    with pytest.raises(FmnistError, match="are not those 'fmnist tune' searches"):
        settings_for(BASE, params, "t")


def test_a_continued_study_runs_again_what_a_stop_or_a_dead_worker_cut_short(tmp_path):
    store, shown = open_storage(None, tmp_path)
    study = open_study("s", store, shown, BASE)
    waiting, failed, running = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.FAIL,
                                optuna.trial.TrialState.RUNNING)

    def started(worker: str | None, host: str = socket.gethostname()) -> optuna.Trial:
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("host", host)
        suggest(trial, BASE)
        return trial

    stopped = started(worker_key(os.getpid()))  # the recipe's own settings, first; Ctrl-C stops it
    assert stopped.params == trial_params(BASE)
    stopped.set_user_attr("stopped", True)
    study.tell(stopped, state=failed)
    process = subprocess.Popen(["sleep", "30"])
    killed = started(worker_key(process.pid))  # a worker killed mid-trial: in a journal its trial stays running
    process.kill()
    process.wait()
    live = started(worker_key(os.getppid()))  # another worker's, still running
    boot, namespace, _, start = worker_key(os.getpid()).split(" ")
    elsewhere = started(f"{boot} {int(namespace) + 1} {process.pid} {start}")  # another container's: not judged
    earlier_boot = f"{'0' * 8}{boot[8:]} {namespace} {os.getpid()} {start}"
    rebooted = started(earlier_boot)  # this machine's, before it last booted: ended with that boot
    other_machine = started(earlier_boot, host=f"not-{socket.gethostname()}")  # not judged
    # In a database, whose heartbeat tells: another machine of the same host name (a clone) is not judged either.
    same_name_db = started(earlier_boot)
    same_name_db.set_user_attr("heartbeat", True)
    broken = started(worker_key(os.getpid()))
    study.tell(broken, state=failed)  # failed by its settings: not run again

    again = open_study("s", store, shown, BASE)
    state = {t.number: t.state for t in again.get_trials(deepcopy=False)}
    assert state[killed.number] == state[rebooted.number] == failed
    shown = {t.number: trial_state(t) for t in again.get_trials(deepcopy=False)}  # as the summary and page say
    assert (shown[killed.number], shown[rebooted.number], shown[stopped.number], shown[broken.number]) == (
        "killed", "killed", "stopped", "fail")
    assert state[live.number] == state[elsewhere.number] == state[other_machine.number] == running
    assert state[same_name_db.number] == running
    queued = [t for t in again.get_trials(deepcopy=False) if t.state == waiting]
    assert [(t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in queued] == [
        (stopped.number, stopped.params), (killed.number, killed.params), (rebooted.number, rebooted.params)]
    assert len(open_study("s", store, shown, BASE).trials) == len(state)  # each is queued once, not each time

    first, second, third = (started(worker_key(os.getpid())) for _ in range(3))
    assert [t.user_attrs["retry_of"] for t in (first, second, third)] == [stopped.number, killed.number,
                                                                          rebooted.number]
    for settings_failed in (second, third):  # the dead workers' settings failed in their turn (say, out of memory)
        study.tell(settings_failed, state=failed)
    retry = first
    for attempt in range(2, defaults.MAX_TRIAL_ATTEMPTS + 1):  # the stopped trial's settings, stopped each time
        retry.set_user_attr("stopped", True)
        study.tell(retry, state=failed)
        queued = [t for t in open_study("s", store, shown, BASE).get_trials(deepcopy=False) if t.state == waiting]
        if attempt < defaults.MAX_TRIAL_ATTEMPTS:
            assert [t.user_attrs["retry_of"] for t in queued] == [stopped.number]
            retry = started(worker_key(os.getpid()))
            assert retry.params == stopped.params
        else:  # not for ever: settings that kill their worker would loop
            assert queued == []

    with pytest.raises(FmnistError, match="study 's' was started with --epochs 2, not 3; --seed 1234, not 7: its "
                                          "trials could not be compared"):
        open_study("s", store, shown, dataclasses.replace(BASE, epochs=3, seed=7, dropout=0.1))  # dropout is searched
    with pytest.raises(FmnistError, match="study 's' was started with no --limit, not 600: its trials"):
        open_study("s", store, shown, dataclasses.replace(BASE, limit=600))
    with pytest.raises(FmnistError, match="study 's' was started with --epochs 2, not 3"):  # before the data load
        tune(dataclasses.replace(BASE, epochs=3), "jax", 1, "s", runs_dir=tmp_path, data_dir=tmp_path / "no data")
    # Begun by a later fmnist, with a setting this one does not know: its trials could not be given it here.
    from fmnist.tune import FIXED_SETTINGS

    study.set_user_attr(FIXED_SETTINGS, {**study.user_attrs[FIXED_SETTINGS], "mixup_alpha": 0.2})
    with pytest.raises(FmnistError, match=r"study 's' was started with mixup_alpha 0.2, a setting this fmnist does "
                                          r"not know \(continue it with the fmnist that began it\): its trials could "
                                          "not be compared"):
        open_study("s", store, shown, BASE)


def test_a_worker_takes_up_the_trial_of_a_worker_beside_it_that_died_meanwhile(tmp_path, dataset, monkeypatch, caplog):
    import fmnist.tune

    run_trial, dead = fmnist.tune._run_trial, []

    def beside_a_worker_that_dies(trial, *args, **kwargs):  # the trial is trained as ever
        if not dead:  # while this worker's first trial trains, another starts one and is killed
            store, shown = open_storage(None, tmp_path)
            other = optuna.load_study(study_name="s", storage=store).ask()
            process = subprocess.Popen(["sleep", "30"])
            other.set_user_attr("worker", worker_key(process.pid))
            other.set_user_attr("host", socket.gethostname())
            suggest(other, BASE)
            process.kill()
            process.wait()
            dead.append(other)
        return run_trial(trial, *args, **kwargs)

    monkeypatch.setattr(fmnist.tune, "_run_trial", beside_a_worker_that_dies)
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)  # its last trial: queued for another worker
    [killed] = dead
    assert (f"trial {killed.number}, cut short (stopped, by a file the system refused, or its worker died), is taken "
            "up again by the next worker to continue the study" in caplog.messages)
    dead.clear()
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        result = tune(BASE, "jax", 2, "s", runs_dir=tmp_path, dataset=dataset)  # another dies beside its first
    [first_killed, killed] = killed, *dead
    trials = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)[0]).get_trials()
    assert [t.user_attrs.get("retry_of") for t in trials if t.number > killed.number] == [killed.number]
    retry = trials[-1]
    assert retry.params == killed.params and result.states == {"complete": 3, "killed": 2}  # taken up next, here
    assert trials[first_killed.number + 1].user_attrs["retry_of"] == first_killed.number  # the first run's, first
    assert (f"trial {killed.number}, cut short (stopped, by a file the system refused, or its worker died), is taken "
            "up again next" in caplog.messages)


def test_train_best_of_a_study_without_a_finished_trial_names_the_command_that_runs_them(tmp_path):
    store, shown = open_storage(None, tmp_path)
    open_study("s", store, shown, dataclasses.replace(BASE, limit=600))
    with pytest.raises(FmnistError) as refused:
        train_best("s", {}, "jax", runs_dir=tmp_path)
    assert str(refused.value) == (f"study 's' in {shown} has no finished trial yet: 'fmnist tune --study s --storage "
                                  f"{shown} --epochs 2 --limit 600 --lr-patience 1' runs them")
    command = shlex.split(re.search(r"'(fmnist tune .*)' runs them$", str(refused.value))[1])
    parsed = build_parser().parse_args(command[1:])  # as typed: the flags tune takes
    assert (parsed.study, parsed.storage, parsed.epochs, parsed.limit) == ("s", shown, 2, 600)


def test_a_study_made_this_instant_by_another_worker_is_continued_with_its_makers_settings(tmp_path):
    import threading

    from fmnist.tune import FIXED_SETTINGS, _fixed

    store, shown = open_storage(None, tmp_path)
    optuna.create_study(study_name="s", storage=store)  # the maker has made it, and not yet recorded its settings
    maker = threading.Timer(0.5, lambda: optuna.load_study(study_name="s", storage=store).set_user_attr(
        FIXED_SETTINGS, _fixed(dataclasses.replace(BASE, epochs=3))))
    maker.start()
    try:
        with pytest.raises(FmnistError, match="study 's' was started with --epochs 3, not 2"):
            open_study("s", store, shown, BASE)
    finally:
        maker.join()
    older = optuna.create_study(study_name="older", storage=store)  # an older fmnist's: none ever come
    open_study("older", store, shown, BASE)
    assert older.user_attrs[FIXED_SETTINGS] == _fixed(BASE)


def test_a_trial_a_refused_file_cut_short_is_finished_when_the_study_is_continued(tmp_path, dataset, monkeypatch,
                                                                                   caplog):
    import errno

    import keras

    import fmnist.tune as tune_module
    from fmnist.errors import WriteRefused

    class DiskFullAfterFirstEpoch(keras.callbacks.Callback):  # as a backup's write on a full disk fails
        def on_epoch_end(self, epoch, logs=None):
            raise WriteRefused(f"cannot write {tmp_path / 'backup.npz'}: No space left on device")

    pruning = tune_module.pruning_callback
    monkeypatch.setattr(tune_module, "pruning_callback", lambda *args: DiskFullAfterFirstEpoch())
    with caplog.at_level(logging.WARNING, logger="fmnist.tune"), pytest.raises(WriteRefused, match="No space left"):
        tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)  # the study ends: its next trial would too
    assert (f"trial 0: the system refused a file (cannot write {tmp_path / 'backup.npz'}: No space left on device); "
            "continuing the study (the same 'fmnist tune' command) once it can write again takes") in caplog.text
    (cut_short,) = (tmp_path / "s").iterdir()
    assert "or the next worker of its study takes it up" in run_list.summarize(cut_short)["notes"][-1]  # as it does
    [first] = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)[0]).trials
    assert trial_state(first) == "system error"  # not the settings' fault, as a failure would say
    assert first.user_attrs["system_error"] == f"cannot write {tmp_path / 'backup.npz'}: No space left on device"
    with pytest.raises(WriteRefused):  # still no space: its run taken up, not trained again in a new one
        tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)
    assert list((tmp_path / "s").iterdir()) == [cut_short]
    monkeypatch.setattr(tune_module, "pruning_callback", pruning)  # space again
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        result = tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)
    assert f"finishing {cut_short} where it was cut short" in caplog.messages
    retry = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)[0]).trials[-1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and Path(retry.user_attrs["run_dir"]) == cut_short
    assert result.states == {"system error": 2, "complete": 1} and len(artifacts.read_history(cut_short)["loss"]) == 2

    # The storage refusing to record the failure too (its folder made read-only): the storage's error, not Optuna's
    # assertion that hid it ("Should not reach").
    journal = tmp_path / "tune.journal"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(journal))

    def refused_trial(trial, *args):
        monkeypatch.setattr(optuna.storages.JournalStorage, "set_trial_state_values", read_only)
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "s" / "status.json"))

    monkeypatch.setattr(tune_module, "_run_trial", refused_trial)
    with pytest.raises(OSError, match="Read-only file system") as refused:
        tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)
    assert refused.value.filename == str(journal)


def test_a_continued_study_finishes_a_cut_short_run_or_counts_one_finished_by_hand(tmp_path, dataset, monkeypatch,
                                                                                    caplog):
    import threading
    import time

    import keras

    import fmnist.tune as tune_module
    from fmnist import run_lookup

    from fmnist.runs import utc_now
    from fmnist.train import train

    store, shown = open_storage(None, tmp_path)
    study = open_study("s", store, shown, BASE)

    class CtrlCAfterFirstEpoch(keras.callbacks.Callback):  # after that epoch's backup, as a Ctrl-C then would
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    def stopped_trial() -> optuna.Trial:
        """A trial cut short, recorded as the objective records it."""
        trial = study.ask()
        trial.set_user_attr("started", utc_now())
        suggest(trial, BASE)
        trial.set_user_attr("stopped", True)
        return trial

    def continued() -> optuna.trial.FrozenTrial:
        tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)
        return optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)[0]).trials[-1]

    trial = stopped_trial()  # in its second epoch
    with pytest.raises(KeyboardInterrupt):
        train(settings_for(BASE, trial.params, trial_name(trial.number)), "jax", runs_dir=tmp_path / "s",
              dataset=dataset, extra_callbacks=[CtrlCAfterFirstEpoch()])
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (cut_short,) = (tmp_path / "s").iterdir()
    assert run_list.summarize(cut_short)["notes"][-1] == (  # either way of finishing it, as `fmnist runs` says
        f"fmnist train --resume {cut_short} continues it, or the next worker of its study takes it up ('fmnist tune "
        "--study s' with the study's storage and flags; at most 4 tries of a trial's settings in all)")
    # Scored by hand just then, say: the worker waits for it, rather than train the settings again in a new run.
    held, waiting = threading.Event(), "is in use by another process: waiting for it"

    def in_use_till_the_worker_waits() -> None:
        with run_lookup.idle_run(cut_short, tmp_path, "evaluate it"):
            held.set()
            deadline = time.monotonic() + 300
            while waiting not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)

    user = threading.Thread(target=in_use_till_the_worker_waits)
    user.start()
    held.wait(30)
    monkeypatch.setattr(tune_module, "BUSY_POLL_S", 0.2)
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        retry = continued()  # finishes that run from its second epoch, in its folder, once it is free
    user.join()
    assert waiting in caplog.text
    assert caplog.messages.count(f"finishing {cut_short} where it was cut short") == 1  # not again after the wait
    assert retry.state == optuna.trial.TrialState.COMPLETE and Path(retry.user_attrs["run_dir"]) == cut_short
    history = artifacts.read_history(cut_short)
    assert len(history["loss"]) == 2 and retry.intermediate_values == dict(enumerate(history["val_loss"]))
    assert retry.value == min(history["val_loss"])
    assert json.loads((cut_short / artifacts.STATUS).read_text())["state"] == "finished"

    # Another trial of the same settings cut short, whose run 'fmnist train --resume' then finished: that run is as
    # the one just finished, under the trial's name.
    study.enqueue_trial(trial.params)
    trial = stopped_trial()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    config = json.loads((cut_short / artifacts.CONFIG).read_text())

    def run_of(trial: optuna.Trial) -> Path:
        """The finished run copied under ``trial``'s name, as begun after the trial was."""
        run = shutil.copytree(cut_short, cut_short.with_name(cut_short.name.replace(trial_name(0),
                                                                                    trial_name(trial.number))))
        artifacts.write_json(run / artifacts.CONFIG, {**config, "created": utc_now()})
        return run

    by_hand = run_of(trial)
    finished = {p: p.stat().st_mtime_ns for p in by_hand.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        retry = continued()  # counts it: nothing trained again
    assert f"{by_hand}, cut short, was finished since (by 'fmnist train --resume', say): counted as it is" in (
        caplog.messages) and "finishing" not in caplog.text  # not said to be finished first
    assert retry.user_attrs["retry_of"] == trial.number
    assert retry.state == optuna.trial.TrialState.COMPLETE and Path(retry.user_attrs["run_dir"]) == by_hand
    assert retry.user_attrs["run_of"] == trial.number  # its run is named after the attempt that began it: said so
    best = {"number": retry.number, "val_loss": retry.value, "params": retry.params, **retry.user_attrs}
    assert summary(TuneResult("s", "j", 1, {"complete": 1}, best)).splitlines()[1].endswith(
        f"run {by_hand} (begun by trial {trial.number}, which was cut short)")
    assert retry.value == min(artifacts.read_history(by_hand)["val_loss"])
    assert retry.intermediate_values == dict(enumerate(artifacts.read_history(by_hand)["val_loss"]))
    assert {p: p.stat().st_mtime_ns for p in by_hand.iterdir()} == finished
    assert len(list((tmp_path / "s").iterdir())) == 2  # no run made for either retry

    # A trial the pruner stopped, then cut short while its run was scored: pruned again, not counted complete.
    study.enqueue_trial(trial.params)
    trial = stopped_trial()
    trial.set_user_attr("pruned_at", 0)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    pruned = run_of(trial)
    retry = continued()
    assert retry.user_attrs["retry_of"] == trial.number and retry.state == optuna.trial.TrialState.PRUNED
    assert Path(retry.user_attrs["run_dir"]) == pruned

    # A retry cut short too, whose first attempt left no run it could finish, so it began one of its own: that run is
    # the one the next retry finishes, not trained again; nor pruned, as the first attempt's run was.
    study.enqueue_trial(trial.params)
    first = stopped_trial()  # its run on another machine's disk, say
    first.set_user_attr("run_of", first.number)  # as its pruning callback records it: pruned in its own run
    first.set_user_attr("pruned_at", 0)
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(first.params, user_attrs={"retry_of": first.number})
    second = stopped_trial()
    study.tell(second, state=optuna.trial.TrialState.FAIL)
    own = run_of(second)
    retry = continued()
    assert retry.user_attrs["retry_of"] == first.number and retry.state == optuna.trial.TrialState.COMPLETE
    assert Path(retry.user_attrs["run_dir"]) == own and retry.user_attrs["run_of"] == second.number

    # One whose status.json was damaged by hand: its settings trained again in a run of their own, the study goes on.
    study.enqueue_trial(first.params)
    trial = stopped_trial()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    damaged = run_of(trial)
    (damaged / artifacts.STATUS).write_text("{")
    with caplog.at_level(logging.WARNING, logger="fmnist.tune"):
        retry = continued()
    assert retry.state == optuna.trial.TrialState.COMPLETE and Path(retry.user_attrs["run_dir"]) != damaged
    assert retry.user_attrs["run_of"] == retry.number
    assert f"{damaged} cannot be finished ({damaged / artifacts.STATUS} is not valid JSON" in caplog.text


def test_a_cut_short_run_is_taken_up_only_if_nothing_but_its_name_differs(tmp_path, dataset):
    from fmnist import run_locks, runs
    from fmnist.data import data_record

    settings = settings_for(BASE, trial_params(BASE), trial_name(7))  # the retry's own name
    started = "2026-12-01T00:00:01Z"  # when the first attempt began, as its objective records it

    def made(name: str, second: int, **changes) -> Path:
        """A run folder as create_run_dir names it, with the config that train writes."""
        folder = tmp_path / f"20261201T00000{second}Z-{name}"
        folder.mkdir()
        config = {"settings": settings_for(BASE, trial_params(BASE), name).to_dict(), "backend": "jax",
                  "data": data_record(dataset), "created": f"2026-12-01T00:00:0{second}Z"}
        artifacts.write_json(folder / artifacts.CONFIG, {**config, **changes})
        return folder

    run = made(trial_name(0), 1)
    assert _cut_short_run(tmp_path, 0, started, settings, "jax", dataset) == run
    later = "2026-12-01T00:00:02Z"  # the run was made before this trial began: an earlier study's
    assert _cut_short_run(tmp_path, 0, later, settings, "jax", dataset) is None
    assert _cut_short_run(tmp_path, 0, started, settings, "tensorflow", dataset) is None  # trained on another backend
    assert _cut_short_run(tmp_path, 0, started, dataclasses.replace(settings, dropout=0.1), "jax", dataset) is None
    with run_locks.claim_run(run):  # being trained right now, by 'fmnist train --resume' say
        assert _cut_short_run(tmp_path, 0, started, settings, "jax", dataset) is None
    runs.set_status(run, "failed", error="loss became NaN", diverged=True)
    assert _cut_short_run(tmp_path, 0, started, settings, "jax", dataset) is None  # its settings' fault
    other_data = made(trial_name(1), 1, data={"source": "elsewhere", "sha256": {}})
    assert _cut_short_run(tmp_path, 1, started, settings, "jax", dataset) is None and other_data.is_dir()
    made(trial_name(2), 2), made(trial_name(2), 3)  # two, both made since: which is it?
    assert _cut_short_run(tmp_path, 2, started, settings, "jax", dataset) is None
    made(trial_name(3), 0)  # an earlier study's (its journal deleted), beside the one this trial made
    this_trials = made(trial_name(3), 4)
    assert _cut_short_run(tmp_path, 3, started, settings, "jax", dataset) == this_trials


def test_a_run_found_diverged_once_picked_is_trained_again_not_the_end_of_the_study(tmp_path, dataset, caplog):
    from fmnist import runs
    from fmnist.train import train
    from fmnist.tune import _finish

    settings = settings_for(BASE, trial_params(BASE), trial_name(0))
    run = train(settings, "jax", runs_dir=tmp_path, dataset=dataset).run_dir
    # Picked as cut short, then failed by another process (a 'fmnist train --resume' by hand) before this worker began.
    runs.set_status(run, "failed", error="training diverged in epoch 2: the loss became nan", diverged=True)
    with caplog.at_level(logging.WARNING, logger="fmnist.tune"):
        assert _finish(run, dataset, [], dict) is None
    assert f"{run} cannot be finished ({run} diverged" in caplog.text


def test_a_setting_carried_from_the_study_that_clashes_with_a_flag_is_named_as_the_studys(tmp_path):
    store, shown = open_storage(None, tmp_path)
    study = open_study("v", store, shown, TrainSettings(epochs=2, validation_fraction=0.9))
    trial = study.ask()  # the spec's own settings, queued first
    suggest(trial, TrainSettings(epochs=2, validation_fraction=0.9))
    study.tell(trial, 1.0)
    with pytest.raises(FmnistError, match=r"^invalid setting: a split of 50 images into 5 for training and 45 for "
                                          r"validation cannot hold all 10 classes on each side; raise --limit or "
                                          r"change --validation-fraction \(carried over from the study: "
                                          r"--validation-fraction 0\.9\)$") as refused:
        train_best("v", {"limit": 50}, "jax", runs_dir=tmp_path)  # its --epochs 2, a trial's budget, not carried
    assert not isinstance(refused.value, UsageError)  # status 1: the flag alone is sound
    with pytest.raises(UsageError, match=r"^invalid setting: --dropout must be in \[0, 1\) \(given 1\.5\)$"):
        train_best("v", {"dropout": 1.5}, "jax", runs_dir=tmp_path)  # a flag refused as it stands: status 2


def test_the_search_that_tune_help_describes_is_the_one_it_runs():
    from fmnist.cli import TUNE_DETAILS
    from fmnist.tune import BATCH_SIZES, HIDDEN_SIZES, PRUNER

    study = optuna.create_study()
    trial = study.ask()
    suggest(trial, TrainSettings())
    ranges = {name: (d.low, d.high) for name, d in trial.distributions.items() if hasattr(d, "low")}
    said = " ".join(TUNE_DETAILS.split())
    assert f"hidden sizes from {len(HIDDEN_SIZES)} choices (from {min(HIDDEN_SIZES, key=len)} to " \
           f"{max(HIDDEN_SIZES, key=len)})" in said
    assert f"dropout from {ranges['dropout'][0]:g} to {ranges['dropout'][1]:g}" in said
    low, high = (f"{bound:.0e}".replace("e-0", "e-") for bound in ranges["learning_rate"])  # 1e-4
    assert f"learning rate from {low} to {high} (log scale)" in said
    assert "batch size from " + ", ".join(map(str, BATCH_SIZES[:-1])) + f" and {BATCH_SIZES[-1]}" in said
    assert f"(--lr-factor) from {ranges['lr_factor'][0]:g} to {ranges['lr_factor'][1]:g}" in said
    assert f"Once {PRUNER['n_startup_trials']} trials have finished" in said
    assert PRUNER["n_warmup_steps"] == 1 and "from its second epoch on" in said
    from fmnist.facts import TRAINING_IMAGES

    spec = TrainSettings()  # a trial's budget without --limit and --epochs, as said
    trained = round(TRAINING_IMAGES * (1 - spec.validation_fraction))
    assert f"on {trained:,} images for up to {spec.epochs} epochs" in said


@pytest.mark.parametrize("stopping_patience", [2, 3, 4, 5])  # around the spec's plateau patience, 3
def test_the_plateau_factor_is_searched_only_where_the_learning_rate_can_drop(tmp_path, dataset, caplog,
                                                                              stopping_patience):
    import keras

    from fmnist.recipes import schedule_callbacks

    spec = dataclasses.replace(TrainSettings(), early_stopping_patience=stopping_patience)
    for epochs in range(1, spec.lr_patience + 5):
        # The spec's own plateau and early stopping, each epoch worse than the first: any trained at a lowered rate?
        settings = dataclasses.replace(spec, epochs=epochs)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
        callbacks = keras.callbacks.CallbackList(schedule_callbacks(settings), model=model)
        callbacks.on_train_begin()
        lowered = 0
        for epoch in range(epochs):
            if model.stop_training:
                break
            lowered += float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) < settings.learning_rate
            callbacks.on_epoch_end(epoch, {"val_loss": 1.0 + epoch})
        assert ("lr_factor" in trial_params(settings)) == (lowered > 0), epochs
    short = dataclasses.replace(spec, epochs=spec.lr_patience + 1)
    trial = optuna.create_study().ask()
    suggest(trial, short)
    assert set(trial.params) == set(trial_params(short)) and "lr_factor" not in trial.params
    if stopping_patience == 5:  # once is enough
        with caplog.at_level(logging.INFO, logger="fmnist.tune"):
            tune(BASE, "jax", 1, "s", runs_dir=tmp_path, dataset=dataset)
        assert "the plateau factor is not searched: no epoch of a trial would train at a lowered learning rate (2 " \
               "epochs; the rate drops after 1 without a better val_loss, early stopping after 5); " \
               f"--train-best trains with the factor {BASE.lr_factor:g}; for another, run the best trial's 'fmnist " \
               f"train' line, from the page of 'fmnist tune --report s --storage " \
               f"{tmp_path / artifacts.TUNE_JOURNAL}', with --lr-factor added" in caplog.text


def test_a_cut_short_trial_of_a_study_begun_when_the_factor_was_searched_is_still_run_again(tmp_path):
    from fmnist.tune import queue_retry

    store, shown = open_storage(None, tmp_path)
    study = open_study("old", store, shown, BASE)  # 2 epochs: the factor is not searched now
    trial = study.ask()
    suggest(trial, dataclasses.replace(BASE, epochs=10))  # as an earlier fmnist drew it, the factor among them
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert "lr_factor" in trial.params and queue_retry(study, study.trials[-1])
    drawn_in_part = study.ask()
    drawn_in_part.suggest_float("dropout", 0.0, 0.5)  # stopped before the rest were drawn: nothing to finish
    study.tell(drawn_in_part, state=optuna.trial.TrialState.FAIL)
    assert not queue_retry(study, study.trials[-1])


def test_json_gives_the_best_trials_hidden_sizes_as_units_as_a_runs_config_does():
    from fmnist.tune import TuneResult

    best = {"number": 0, "val_loss": 0.5, "params": {"hidden_sizes": "512,256", "dropout": 0.3}}
    result = TuneResult("s", "tune.journal", 1, {"complete": 1}, best)
    assert result.record()["best"]["params"] == {"hidden_sizes": [512, 256], "dropout": 0.3}
    assert result.best["params"]["hidden_sizes"] == "512,256"  # as the study stores it, for --train-best
    assert TuneResult("s", "tune.journal", 0, {}, None).record()["best"] is None
    foreign = {**best, "params": {"hidden_sizes": "wide"}}  # a study another program wrote: given as it is
    assert TuneResult("s", "tune.journal", 1, {}, foreign).record()["best"]["params"] == {"hidden_sizes": "wide"}
