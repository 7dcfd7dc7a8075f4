import argparse
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import refused_before_keras, run_cli
from fmnist import artifacts, run_list


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fmnist: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_teaches_and_imports_nothing_heavy():
    result = run_cli("--help")
    assert result.returncode == 0 and "fmnist train --backend tensorflow" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from fmnist.cli import build_parser; build_parser(); import fmnist.runs;"
                               "import fmnist.run_locks, fmnist.run_lookup, fmnist.run_settings;"
                               "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'numpy') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"  # `fmnist runs` too: its module reads a backup's record only when one is there
    version = run_cli("--version")  # the installed package's own, written once in fmnist/__init__.py
    assert version.returncode == 0 and version.stdout == f"fmnist {metadata.version('fmnist')}\n"


def test_the_exit_statuses_the_help_lists_are_those_given(tmp_path):
    import re

    listed = run_cli("--help").stdout.split("exit status:\n")[1]
    codes = {int(code): text for code, text in re.findall(r"^  (\d+)\s+(.*)$", listed, re.MULTILINE)}
    assert sorted(codes) == [0, 1, 2, 130, 141] and "Ctrl-C" in codes[130]  # 130 itself: tests/test_stopping.py
    assert run_cli("runs", "--runs-dir", str(tmp_path)).returncode == 0
    refused = run_cli("evaluate", str(tmp_path / "no-such-run"))
    assert refused.returncode == 1 and refused.stderr.startswith("fmnist: error: ")
    assert run_cli("train", "--epochs", "0").returncode == 2


def test_every_commands_description_is_wrapped_and_says_what_it_writes():
    from fmnist.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    found = {p.prog: p.description or "" for p in parsers(build_parser())}
    flowing = {prog: " ".join(text.split()) for prog, text in found.items()}
    assert len(found) == 12  # fmnist, its 10 commands and runs compare
    prose = [line for text in found.values() for line in text.splitlines() if not line.startswith(" ")]
    assert max(map(len, prose)) <= 79, max(prose, key=len)
    assert "rewrites the run's metrics, predictions, pictures and report" in flowing["fmnist evaluate"]
    assert "RUNS_DIR/<UTC time>-<name>/" in flowing["fmnist train"]
    assert "hidden sizes, dropout, learning rate, batch size and plateau factor" in flowing["fmnist tune"]


def test_a_run_without_its_model_or_with_a_changed_one_is_refused_before_keras_starts(tmp_path):
    run, changed = tmp_path / "stopped", tmp_path / "changed"
    for folder, state in ((run, "interrupted"), (changed, "finished")):
        folder.mkdir()
        artifacts.write_json(folder / artifacts.CONFIG, {"settings": {}, "backend": "jax"})
        artifacts.write_json(folder / artifacts.STATUS, {"state": state})
    (changed / artifacts.MODEL).write_bytes(b"PK\x03\x04 written over")
    (changed / artifacts.MODEL_SHA256).write_text(f"{'0' * 64}  {artifacts.MODEL}\n")
    commands = [command for folder in (run, changed)
                for command in (["predict", str(folder), str(tmp_path / "x.npy")], ["evaluate", str(folder)],
                                ["serve", str(folder)], ["export", str(folder), "--format", "onnx"])]
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.float32))
    said = refused_before_keras(commands)
    refusal = f"fmnist: error: {run} has no model yet: its training has not finished; 'fmnist train --resume {run}'"
    assert said.count(refusal) == 4, said
    assert said.count(f"fmnist: error: {changed / artifacts.MODEL} does not match its recorded SHA-256") == 4


def test_missing_data_dir_is_one_clear_line(tmp_path):
    result = run_cli("data", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "nowhere does not exist: give the folder that holds the four IDX files",
                          "dataset-fashion-mnist")  # to install, or installed: leave out --data-dir


def test_bad_settings_and_arguments_are_refused(tmp_path):
    out_of_range = run_cli("train", "--dropout", "1.5", "--runs-dir", str(tmp_path))  # as argparse refuses --epochs 0
    assert out_of_range.returncode == 2 and out_of_range.stderr.splitlines() == [
        "fmnist: error: invalid setting: --dropout must be in [0, 1) (given 1.5) (see 'fmnist train --help')"]
    usage = run_cli("train", "--epochs", "0")
    assert usage.returncode == 2 and usage.stderr.splitlines() == [
        "fmnist: error: argument --epochs: '0' must be positive (see 'fmnist train --help')"]
    unknown = run_cli("runs", "compare", "a", "b", "--bogus")
    assert unknown.returncode == 2 and unknown.stderr.splitlines() == [
        "fmnist: error: unrecognized arguments: --bogus (see 'fmnist runs compare --help')"]
    assert_one_line_error(run_cli("evaluate", str(tmp_path)), "is not a run directory")
    assert not list(tmp_path.iterdir())  # a refused run leaves nothing behind


@pytest.mark.realdata
def test_corrupt_real_file_is_named(tmp_path, real_data_dir):
    for path in real_data_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-40])
    assert_one_line_error(run_cli("data", "--data-dir", str(tmp_path)), "t10k-labels-idx1-ubyte")
    ok = run_cli("data", "--data-dir", str(real_data_dir), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["train_images"] == 60000


@pytest.mark.realdata
def test_short_real_training_end_to_end_on_the_specs_backend(tmp_path, real_data_dir):
    # On TensorFlow, the spec's backend; JAX, the default, trains on the real data in test_resume and test_page, and
    # loads this model back below.
    backend = "tensorflow"
    runs = tmp_path / "runs"
    result = run_cli("train", "--backend", backend, "--epochs", "3", "--limit", "12000", "--runs-dir", str(runs),
                     "--name", f"short-{backend}", "--json")
    assert result.returncode == 0, result.stderr
    trained = json.loads(result.stdout)
    # Three epochs on 9,600 images score 0.79-0.83 by machine and backend (TensorFlow's CPU kernels differ between
    # CPUs); chance is 0.10, and a broken pipeline stays far below 0.75.
    assert trained["test_accuracy"] >= 0.75 and trained["epochs"] == 3
    assert trained["backend"] == backend and 1 <= trained["epoch_kept"] <= 3
    # Which recipe ran, as `fmnist runs` names it: a run's length and size are its own, not its recipe's.
    assert trained["recipe"] == "spec" and "recipe: the spec's\n" in result.stderr
    run_dir = trained["run_dir"]
    assert json.loads((runs / run_dir.split("/")[-1] / artifacts.CONFIG).read_text())["backend"] == backend

    # The saved model loads back (in a fresh process, on the default backend) and predicts the same; --json names
    # the run by its absolute path, however it was given; scoring needs the two test files alone.
    test_files = tmp_path / "test-files"
    test_files.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (test_files / name).symlink_to(real_data_dir / name)
    again = run_cli("evaluate", Path(run_dir).name, "--json", "--data-dir", str(test_files), cwd=runs)
    assert again.returncode == 0, again.stderr
    evaluated = json.loads(again.stdout)
    assert evaluated["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-4)
    assert evaluated["run_dir"] == run_dir and Path(run_dir).is_absolute()
    # Scored on the default backend, not the one that trained it: its progress says which.
    assert f"on the 10,000 test images ({evaluated['evaluated_backend']} backend)\n" in again.stderr
    assert evaluated["evaluated_backend"] != backend
    # train --json gives the figures evaluate --json does, and where the report is.
    assert trained["report"] == evaluated["report"] == str(Path(run_dir) / artifacts.REPORT_HTML)
    for key in ("test_accuracy_ci95", "ece_before_scaling", "ece", "temperature"):
        assert trained[key] == pytest.approx(evaluated[key], abs=1e-4), key
    # evaluate drew the report again, from the files (`fmnist report` does the same: tests/test_runs.py runs it)
    assert f"on {evaluated['evaluated_backend']}</td>" in (Path(run_dir) / artifacts.REPORT_HTML).read_text()
    assert evaluated["report"] == str(Path(run_dir) / artifacts.REPORT_HTML)  # as the text's last line names it
    # Given by name from its folder, the text names the report by its absolute path too, as train's does.
    drawn = run_cli("-q", "report", Path(run_dir).name, cwd=runs)
    assert drawn.stdout == f"report: {Path(run_dir) / artifacts.REPORT_HTML}\n", drawn.stderr

    with open(f"{run_dir}/{artifacts.MODEL}", "ab") as f:
        f.write(b"tampered")
    assert_one_line_error(run_cli("evaluate", run_dir), "does not match its recorded SHA-256")


def test_a_file_the_system_refuses_is_one_line_naming_it(tmp_path, tiny_run_dir, capsys):
    from fmnist.cli import main

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.REPORT_HTML).unlink()
    (run / artifacts.REPORT_HTML).mkdir()  # the new report cannot take its place
    assert main(["report", str(run)]) == 1
    assert capsys.readouterr().err == f"fmnist: error: cannot write {run / artifacts.REPORT_HTML}: Is a directory\n"


def test_an_error_the_system_raises_anywhere_is_one_line_naming_the_file(monkeypatch, capsys):
    from fmnist.cli import main

    # As a folder the user may not read would (no permission bit stops root, who runs CI).
    def refused(runs_dir, **options):
        raise PermissionError(13, "Permission denied", str(runs_dir))

    monkeypatch.setattr(run_list, "list_runs", refused)
    assert main(["runs", "--runs-dir", "locked"]) == 1
    assert capsys.readouterr().err == "fmnist: error: Permission denied: locked\n"
    assert main(["runs", "--runs-dir", "locked\nfolder"]) == 1  # a newline in the name given
    assert capsys.readouterr().err == "fmnist: error: Permission denied: locked\\nfolder\n"


def test_an_unexpected_error_of_several_lines_is_still_one(monkeypatch, capsys):
    from fmnist.cli import main

    def driver_failed(runs_dir, **options):  # as SQLAlchemy's errors are: the cause, then a line of background
        raise RuntimeError("(psycopg2.OperationalError) server closed the connection\n(Background on this error at: "
                           "https://sqlalche.me/e/20/e3q8)")

    monkeypatch.setattr(run_list, "list_runs", driver_failed)
    assert main(["runs"]) == 1
    assert capsys.readouterr().err == ("fmnist: error: unexpected RuntimeError: (psycopg2.OperationalError) server "
                                       "closed the connection (rerun with --debug for details)\n")


def test_debug_shows_the_traceback_of_an_expected_error_too(tmp_path):
    result = run_cli("--debug", "report", str(tmp_path / "nope"))
    assert result.returncode == 1 and "Traceback" in result.stderr and "FmnistError" in result.stderr
    assert_one_line_error(run_cli("report", str(tmp_path / "nope")), "nope")


def test_every_command_shows_its_examples_and_takes_the_common_flags_after_its_name():
    import argparse

    from fmnist.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        assert f"examples:\n  fmnist {name}" in command.format_help(), name
    for argv in (["-q", "report", "r"], ["report", "r", "-q"], ["report", "r", "--quiet", "--debug"]):
        args = parser.parse_args(argv)
        assert args.quiet and args.json is False, argv
    assert parser.parse_args(["report", "r", "--json"]).json
    assert parser.parse_args(["--debug", "runs", "compare", "a", "b", "--json", "-q"]).debug


def test_a_closed_pipe_ends_quietly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as at most terminals
    process = subprocess.Popen([sys.executable, "-m", "fmnist", "runs", "--runs-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # like `fmnist runs | head -0`
    assert process.wait(timeout=60) == 141 and process.stderr.read().decode() == ""


def test_a_setting_refused_names_the_flags_once(capsys):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["train", "--limit", "5"])
    assert refused.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: invalid setting: a split of 5 images into 4 for training and 1 for validation cannot hold all "
        "10 classes on each side; raise --limit or change --validation-fraction (see 'fmnist train --help')\n"
    )  # was "raise ----limit"
    with pytest.raises(SystemExit):  # all 60,000 used already: no --limit to raise
        main(["train", "--validation-fraction", "0.9999"])
    assert capsys.readouterr().err.endswith("on each side; change --validation-fraction (see 'fmnist train --help')\n")


def test_a_teacher_given_on_the_command_line_is_kept_absolute(tmp_path, monkeypatch):
    from fmnist.cli import _settings_from_args, build_parser

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "elsewhere" / "20261130T000000Z-cnn"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text("{}")
    args = build_parser().parse_args(["train", "--recipe", "distilled", "--teacher", "20261130T000000Z-cnn",
                                      "--runs-dir", "elsewhere"])  # a name in --runs-dir
    assert _settings_from_args(args).teacher == str(teacher.resolve())


def test_json_holds_no_nan_and_a_closed_or_full_stdout_is_said_so(tmp_path):
    import math

    from fmnist import artifacts, runs

    run = runs.create_run_dir(tmp_path, "edited")
    (run / artifacts.CONFIG).write_text('{"settings": {"dropout": NaN, "epochs": Infinity}}')  # by hand
    listed = run_cli("runs", "--runs-dir", str(tmp_path), "--json")
    row = json.loads(listed.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))["runs"][0]
    assert row["settings"] == {"dropout": None, "epochs": None} and not any(
        isinstance(v, float) and not math.isfinite(v) for v in row["settings"].values())
    closed = subprocess.run(["sh", "-c", '"$0" -m fmnist runs --runs-dir "$1" >&-', sys.executable, str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, timeout=60)  # `>&-`: standard output closed
    assert closed.returncode == 1 and closed.stderr == (
        "fmnist: error: standard output is closed, where the results go: give it a file or a pipe\n")
    with open("/dev/full", "w") as full:  # a full disk: the results' write is named, not taken for a run file's
        refused = subprocess.run([sys.executable, "-m", "fmnist", "runs", "--runs-dir", str(tmp_path), "--json"],
                                 stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stderr == (
        "fmnist: error: cannot write the results to standard output (No space left on device): send them elsewhere, "
        "such as a file on a disk with room\n")


def test_a_missing_data_folder_or_a_seed_past_the_last_is_refused_before_keras_starts(tmp_path):
    commands = [["train", "--data-dir", str(tmp_path / "missing"), "--runs-dir", str(tmp_path)],
                ["train", "--seed", "4294967295", "--seeds", "3", "--runs-dir", str(tmp_path)]]
    said = refused_before_keras(commands)
    assert f"fmnist: error: {tmp_path / 'missing'} does not exist: give the folder" in said
    assert "fmnist: error: --seeds 3 from seed 4294967295 would go up to seed 4294967297" in said


def test_an_error_naming_a_path_with_a_newline_stays_one_line(tmp_path, capsys):
    from fmnist.cli import main

    assert main(["runs", "--runs-dir", str(tmp_path / "a\nb")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fmnist: error: {tmp_path}/a\\nb does not exist")


def test_fmnists_messages_are_printed_once_after_tensorflows_absl_has_logged(monkeypatch, capsys):
    """absl sets up a bare root logger on its first message (a SavedModel export logs one): each warning after it
    was printed twice, the second prefixed "WARNING:fmnist.export:"."""
    import logging

    import absl.logging

    from fmnist import cli

    def command(args: argparse.Namespace) -> int:
        absl.logging.info("a message of TensorFlow's")
        logging.getLogger("fmnist.export").warning("replaced the earlier export")
        logging.getLogger("some.library").warning("a library's warning")
        return 0

    monkeypatch.setattr(logging.root, "handlers", [])  # as in a process of its own, outside pytest
    monkeypatch.setattr(cli, "_run_command", command)
    assert cli.main(["runs"]) == 0
    assert capsys.readouterr().err == ("fmnist: warning: replaced the earlier export\n"
                                       "WARNING:some.library:a library's warning\n")
    assert logging.root.handlers == []


def test_a_stop_that_a_library_turns_into_an_error_of_its_own_is_said_as_a_stop(monkeypatch, capsys):
    """Ctrl-C during a SavedModel export: TensorFlow's saving raised AssertionError, SystemError or RuntimeError."""
    import signal

    from fmnist import cli, stopping

    def command(args: argparse.Namespace) -> None:
        try:
            stopping.stop(signal.SIGINT)  # as the handler of a Ctrl-C does
        except KeyboardInterrupt:
            raise AssertionError("Nesting violated for default stack of Graph objects") from None

    monkeypatch.setattr(cli, "cmd_runs", command)
    assert cli.main(["runs"]) == 130
    assert capsys.readouterr().err == "fmnist: interrupted\n"
    # without a stop, the same error is one line of its own

    def bug(args: argparse.Namespace) -> None:
        raise AssertionError("a bug")

    monkeypatch.setattr(cli, "cmd_runs", bug)
    assert cli.main(["runs"]) == 1
    assert capsys.readouterr().err == ("fmnist: error: unexpected AssertionError: a bug (rerun with --debug for "
                                       "details)\n")


def test_every_example_of_the_help_parses_as_written():
    """Each example's command, up to its description (two spaces or more on), pasted into a shell."""
    import re
    import shlex

    from fmnist.cli import EXAMPLES, build_parser

    parser = build_parser()
    examples = EXAMPLES.splitlines()[1:]
    assert examples  # else nothing below is checked
    for line in examples:
        command = re.sub(r"<[^>]*>", "X", re.split(r"\s{2,}", line.strip())[0])  # runs/<id>: a run's name
        parser.parse_args(shlex.split(command)[1:])


def test_runs_compare_help_gives_its_own_examples_groups_among_them():
    said = run_cli("runs", "compare", "--help").stdout
    examples = said.split("examples:\n")[1].splitlines()
    assert examples and all(line.split()[:3] == ["fmnist", "runs", "compare"] for line in examples), examples
    assert any("two --seeds groups" in line for line in examples)
    runs_usage = run_cli("runs", "--help").stdout.split("\n\n")[0]
    assert "{compare}" not in runs_usage
    assert runs_usage.endswith("[compare ...]"), runs_usage  # `fmnist runs` alone lists the runs: compare is optional


def test_the_listings_wide_flag_before_compare_is_refused_not_ignored(capsys):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["runs", "--wide", "compare", "a", "b"])
    assert refused.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: --wide widens the table of 'fmnist runs'; compare draws a page: leave --wide out "
        "(see 'fmnist runs compare --help')\n")
