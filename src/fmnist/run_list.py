"""`fmnist runs`: every run and ``--seeds`` group under a folder, as a table or JSON, read from whatever of their
files are there; the small formatting helpers the other tables share; and the refusal of a run not yet scored."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import statistics
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

from fmnist import artifacts, defaults, model_files, recipes, run_locks, run_settings, runs
from fmnist.backup_file import checked_meta, holds_whole_training
from fmnist.errors import DamagedFile, FmnistError
from fmnist.settings import TrainSettings


RESTORE = "restore it from a copy"


def _read_object(path: Path, notes: list[str], note_missing: bool = True, mend: str = "") -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` with a note saying why not (damaged, with ``mend``, what to do about
    it): listing never fails on one bad run."""
    try:
        if not path.is_file():
            if note_missing:
                notes.append(f"no {path.name}")
            return {}
        return artifacts.read_json(path)
    except DamagedFile:  # not a JSON object
        notes.append(f"{path.name} damaged" + (f": {mend}" if mend else ""))
    except (FmnistError, OSError):  # unreadable (is_file too raises in a folder we cannot enter)
        notes.append(f"{path.name} unreadable")
    return {}


def summarize(run_dir: Path) -> dict[str, Any]:
    """What `fmnist runs` shows for one run directory, from whatever of its files are there and readable."""
    run_dir = Path(run_dir)
    if runs.is_seed_group(run_dir) and not _has_runs(run_dir):  # stopped before its first run began
        return _unbegun_group(run_dir)
    notes: list[str] = []
    _note_name(run_dir, notes)
    config = _read_object(run_dir / artifacts.CONFIG, notes, mend=RESTORE)
    status = _read_object(run_dir / artifacts.STATUS, notes, mend=RESTORE)
    settings = run_settings.settings_of(config)
    settings_read = _note_settings(settings, notes)
    history = run_dir / artifacts.HISTORY
    epochs = artifacts.json_number(status.get("epochs"))
    try:
        if epochs is None and history.is_file():  # a run still going (or killed) has only its history so far
            epochs = max(0, len(artifacts.history_lines(run_dir)) - 1)
    except OSError:
        notes.append(f"{history.name} unreadable")
    except ValueError:  # not text
        notes.append(HISTORY_DAMAGED)
    state = _recorded_state(status, notes)
    # None yet while running; a finished run's that cannot be read is said below, with what to do
    metrics = _read_object(run_dir / artifacts.METRICS, [] if state == runs.FINISHED else notes, note_missing=False)
    unscored = state == runs.FINISHED and not (run_dir / artifacts.METRICS).is_file()
    state = runs.state_now(run_dir, state)
    # A finished run's process may score it still.
    live = state == runs.RUNNING or (unscored and run_locks.being_trained(run_dir))
    lost = [name for name in (artifacts.MODEL, artifacts.MODEL_SHA256)
            if state == runs.FINISHED and not (run_dir / name).is_file()]  # only a finished run has them
    epochs = _note_state(run_dir, state, status, settings.get("epochs"), epochs, notes,
                         unscored=unscored, live=live, lost=lost, config_read=bool(config) and settings_read)
    _note_model_files(run_dir, state, live, lost, notes)
    _note_scores(run_dir, state, metrics, notes)
    kept = _kept_epoch(run_dir, config, notes) if state == runs.FINISHED else None  # a stopped run's is not final
    created = config.get("created") or status.get("updated") or runs.iso(
        dt.datetime.fromtimestamp(run_dir.stat().st_mtime, dt.timezone.utc))
    return {
        **_row_without_results(run_dir, str(created), settings, config.get("backend"), state, notes),
        "epochs": None if epochs is None else int(epochs),
        "epoch_kept": kept,
        "test_accuracy": scored_accuracy(metrics),  # a number the notes call damaged is not shown, nor averaged
        "macro_f1": _fraction(metrics.get("macro_f1")),
        "train_seconds": artifacts.json_number(status.get("train_seconds")),
    }


def _note_settings(settings: dict[str, Any], notes: list[str]) -> bool:
    """Notes a setting not of its type, which no fmnist trains with (edited by hand: hidden_sizes "512,256"), rather
    than list it as the run's; whether the settings read."""
    wrong = TrainSettings.mistyped(settings)
    if wrong:
        notes.append(f"{artifacts.CONFIG} damaged ({wrong}): restore it from a copy")
    return wrong is None


def _note_name(run_dir: Path, notes: list[str]) -> None:
    """Notes where the run's folder name, or the path to it, is not UTF-8."""
    try:  # as the commands that take a run refuse it
        run_dir.name.encode("utf-8")
        runs.require_utf8_name(run_dir)
    except UnicodeEncodeError:
        notes.append("its name is not UTF-8: rename it to use it")
    except FmnistError:  # a folder above it: every run there says so
        notes.append("the path to it is not UTF-8: move it to use it")


def _recorded_state(status: dict[str, Any], notes: list[str]) -> str:
    """The state status.json records: "unknown" where it has none, or (with a note) one not of ours."""
    state = str(status.get("state", "unknown"))
    if status and state not in runs.STATES:  # edited by hand: shown as written, it would pass for a state of ours
        notes.append(f"{artifacts.STATUS} damaged (state {status.get('state')!r}): {RESTORE}")
        state = "unknown"
    return state


def _note_state(run_dir: Path, state: str, status: dict[str, Any], planned_epochs: Any, epochs: float | None,
                notes: list[str], *, unscored: bool, live: bool, lost: list[str], config_read: bool) -> float | None:
    """Notes on a diverged, pruned, stopped or unscored run's state; returns its ``epochs``, for a stopped run those its
    resume continues from."""
    if status.get("diverged"):
        notes.append(f"diverged: {runs.DIVERGED_ADVICE}")
    elif state == runs.FINISHED and status.get("pruned"):
        notes.append(f"pruned {status['pruned']}")
    elif state in (runs.KILLED, runs.INTERRUPTED, runs.FAILED) and config_read:
        # The backup is judged against config.json only where that reads (``config_read``): else the config's own note
        # says what to do, and the backup, likely sound, is not called another run's.
        epochs, over = _backed_up(run_dir, planned_epochs, notes)
        taken_up = state != runs.FAILED or bool(status.get("refused"))
        if epochs is not None and over:  # stopped while saving its model
            notes.append(_finished_by(run_dir, "saves and scores it", "continues its group", taken_up))
        elif epochs is not None:  # else its note says what to do first
            notes.append(_finished_by(run_dir, "continues it", "continues its group", taken_up))
    elif unscored and live:  # trained: its process scores it on the test set, then draws its report
        notes.append("being scored")
    elif unscored and not lost:  # stopped while it was being scored; without a model, said below
        notes.append("not scored: " + _finished_by(run_dir, "scores it", "scores it"))
    return epochs


def _note_model_files(run_dir: Path, state: str, live: bool, lost: list[str], notes: list[str]) -> None:
    """Notes on a finished run's model files: those ``lost`` (unless it is live), and those plainly damaged."""
    damaged_model = model_files.plainly_damaged(run_dir) if state == runs.FINISHED else []
    for names, said in ((lost if not live else [], "no {}"), (damaged_model, "{} damaged")):
        if names:
            notes.append(f"{said.format(', '.join(names))}: restore {'it' if len(names) == 1 else 'them'} from a "
                         "copy, or train a new run with its settings")


def _note_scores(run_dir: Path, state: str, metrics: dict[str, Any], notes: list[str]) -> None:
    """Notes on a finished run's scores: its metrics, predictions or report damaged or missing, or next to nothing
    learned."""
    # metrics.json is written after the predictions: both are there, unless edited or deleted by hand since
    if state == runs.FINISHED and (run_dir / artifacts.METRICS).is_file():
        damaged = [] if scored_accuracy(metrics) is not None else [f"{artifacts.METRICS} damaged"]
        predictions = run_dir / artifacts.PREDICTIONS
        if not predictions.is_file():
            damaged.append(f"no {artifacts.PREDICTIONS}")
        elif not zipfile.is_zipfile(predictions):  # cut short: its directory, at the end, is gone
            damaged.append(f"{artifacts.PREDICTIONS} damaged")
        if damaged:
            notes.append(f"{', '.join(damaged)}: fmnist evaluate scores it again")
        elif not (run_dir / artifacts.REPORT_HTML).is_file() and not run_locks.being_trained(run_dir):  # stopped it
            notes.append(f"no {artifacts.REPORT_HTML}: fmnist report draws it")
        if not damaged and learned_next_to_nothing(metrics):  # as its scoring warned: else it passes for any other
            notes.append("learned next to nothing: its report says the likely cause")


def _summarize_or_say_why_not(run_dir: Path) -> dict[str, Any]:
    """:func:`summarize`, or for a folder the system will not let us look into (another user's, say) a row saying so:
    the listing goes on."""
    try:
        return summarize(run_dir)
    except OSError as exc:
        return _row_without_results(run_dir, "", {}, None, "unknown", [f"cannot be read ({exc.strerror or exc})"])


def _row_without_results(run_dir: Path, created: str, settings: dict[str, Any], backend: str | None, state: str,
                         notes: list[str]) -> dict[str, Any]:
    """A row of :func:`summarize`'s for a folder with no epochs or scores to show (the settings all of them, as
    config.json holds them: the table shows a few)."""
    return {"run": run_dir.name, "path": str(runs.absolute(run_dir)), "created": created,
            "recipe": recipes.closest_recipe(settings) if settings else None, "settings": settings, "backend": backend,
            "epochs": None, "epoch_kept": None, "test_accuracy": None, "macro_f1": None, "train_seconds": None,
            "status": state, "notes": notes}


HISTORY_DAMAGED = f"{artifacts.HISTORY} damaged: restore it from a copy (the report draws its curves from it)"


def _kept_epoch(run_dir: Path, config: dict[str, Any], notes: list[str]) -> int | None:
    """The epoch a finished run's model is from; None where its history is lost or damaged, the latter noted."""
    try:
        history = artifacts.read_history(run_dir)
    except OSError:  # gone, or unreadable: the report says so
        return None
    except DamagedFile:
        history = None
    if history is None or artifacts.missing_history_columns(history):  # not a CSV of numbers, or edited out of shape
        if HISTORY_DAMAGED not in notes:  # said already where its epochs were counted
            notes.append(HISTORY_DAMAGED)
        return None
    return artifacts.kept_epoch(history, config)


# A tune trial's run folder, as tune names it in RUNS_DIR/STUDY/: <UTC time>-trial-0003, "-2" after it if need be.
TRIAL_RUN = re.compile(f"[0-9]{{8}}T[0-9]{{6}}Z-{defaults.TRIAL_PREFIX}[0-9]{{4,}}(-[0-9]+)?")


def _finished_by(run_dir: Path, alone: str, in_group: str, taken_up: bool = True) -> str:
    """Who finishes a stopped run: its resume, its group's resume, or the process training its group now; for a tune
    trial's, its study's next worker too, if ``taken_up``."""
    # ``taken_up`` False: the trial failed otherwise than by a stop or a file the system refused, and the study counts
    # it failed, the settings' fault.
    group = runs.in_seed_group(run_dir)
    if group is None and TRIAL_RUN.fullmatch(run_dir.name) and taken_up:
        return (f"{runs.resume_command(run_dir)} {alone}, or the next worker of its study takes it up ('fmnist tune "
                f"--study {run_dir.parent.name}' with the study's storage and flags; at most "
                f"{defaults.MAX_TRIAL_ATTEMPTS} tries of a trial's settings in all)")
    if group is None:
        return f"{runs.resume_command(run_dir)} {alone}"  # whole, to paste from any folder
    if run_locks.being_trained(group):
        return f"its group's training {alone}"
    return f"{runs.resume_command(run_dir)} {in_group}"


def _backed_up(run_dir: Path, planned_epochs: Any, notes: list[str]) -> tuple[int | None, bool]:
    """The epochs a stopped run's resume continues from: its backup's, not its history's (a kill can land between an
    epoch's row and its backup); and whether it holds the whole training (its resume then only saves and scores it)."""
    try:
        meta = checked_meta(run_dir)
    except FmnistError as exc:  # said as the resume would say it, its files named as in the folder
        notes.append(str(exc).replace(f"{run_dir}{os.sep}", ""))
        return None, False
    if meta is None:  # no backup: its resume trains it from its first epoch
        return 0, False
    return meta["epochs_done"], holds_whole_training(meta, planned_epochs)


# Twice what guessing scores (a tenth, of ten classes): a model whose test accuracy lies surely below it learned next
# to nothing.
NEAR_CHANCE = 0.2


def learned_next_to_nothing(metrics: dict[str, Any]) -> bool:
    """Whether a run's metrics put its test accuracy surely under NEAR_CHANCE: its 95% interval's top below it."""
    interval = metrics.get("test_accuracy_ci95")
    high = artifacts.json_number(interval[1]) if isinstance(interval, list) and len(interval) == 2 else None
    return scored_accuracy(metrics) is not None and high is not None and high < NEAR_CHANCE


def scored_accuracy(metrics: dict[str, Any]) -> float | None:
    """A run's test accuracy from its metrics.json, or None where the file was damaged or edited by hand."""
    return _fraction(metrics.get("test_accuracy"))


def _fraction(value: Any) -> float | None:
    number = artifacts.json_number(value)
    return number if number is not None and 0 <= number <= 1 else None


def _has_runs(folder: Path) -> bool:
    try:
        return bool(runs.run_folders(folder))
    except OSError:  # a folder we may not read
        return False


def _unbegun_group(group_dir: Path) -> dict[str, Any]:
    """What `fmnist runs` shows for a ``--seeds`` group stopped before its first run began (its group.json alone)."""
    record = _read_object(group_dir / artifacts.SEED_GROUP, [])  # unreadable: said below as damaged
    settings = run_settings.settings_of(record)
    planned = _planned_seeds(record)
    live = run_locks.being_trained(group_dir)  # its first seed is still setting up
    if planned is None:
        notes = [f"{artifacts.SEED_GROUP} damaged: {RESTORE}"]
    else:
        notes = ["no seed begun yet" if live else f"no seed begun: {runs.resume_command(group_dir)} trains its "
                 f"{len(planned)} seeds"]
    created = record.get("created") or runs.iso(dt.datetime.fromtimestamp(group_dir.stat().st_mtime, dt.timezone.utc))
    return _row_without_results(group_dir, str(created), settings, record.get("backend"),
                                runs.RUNNING if live else runs.KILLED, notes)


def runs_command(runs_dir: Path | None = None, wide: bool = False) -> tuple[str, dict[str, Any]]:
    """`fmnist runs`: the table of the runs in ``runs_dir`` (given, it must exist; else ./runs, perhaps not yet made),
    narrowed to the terminal unless ``wide``, and the same as a record for --json."""
    folder = runs_folder(runs_dir)
    rows = list_runs(folder, must_exist=runs_dir is not None)
    groups = seed_groups(rows, folder)
    _note_passed_over(rows, groups)
    width = None if wide else terminal_width()
    text = (format_runs(rows, groups, folder, width) if rows else
            f"no runs in {runs.absolute(folder)} yet: start one with 'fmnist train'")
    return text, {"runs_dir": folder, "runs": rows, "groups": groups}


def runs_folder(given: Path | None) -> Path:
    """The runs folder `fmnist runs` and `fmnist runs compare` look in: the one given, else ./runs."""
    return Path(defaults.RUNS_DIR) if given is None else Path(given)


def list_runs(runs_dir: Path, must_exist: bool = False) -> list[dict[str, Any]]:
    """Every run directory under ``runs_dir`` (groups included), newest first; a missing one has none, unless it
    ``must_exist`` (one the user named is more likely mistyped than not made yet)."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise FmnistError(f"{runs_dir} is not a directory; give the runs directory with --runs-dir")
    if must_exist and not runs_dir.exists():
        raise FmnistError(f"{runs_dir} does not exist: give the folder that holds the runs with --runs-dir (default "
                          f"./{defaults.RUNS_DIR})")
    if runs.is_run(runs_dir):
        raise FmnistError(f"{runs_dir} is a run, not a folder of runs: give the folder that holds it (--runs-dir "
                          f"{runs.shell_word(str(runs.absolute(runs_dir).parent))})")
    found = [
        {**_summarize_or_say_why_not(d), "run": d.relative_to(runs_dir).as_posix()}
        for d in runs.run_dirs(runs_dir, runs.GROUP_DEPTH)
    ] if runs_dir.is_dir() else []
    return sorted(found, key=lambda r: (r["created"], r["run"]), reverse=True)


def cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _planned_seeds(record: dict[str, Any]) -> list[int] | None:
    """The seeds a group's group.json ``record`` plans, or None when it is damaged (what its resume would refuse)."""
    from fmnist.seeds import check_count
    from fmnist.settings import TrainSettings

    count = record.get("seeds")
    settings = record.get("settings")
    first = settings.get("seed", TrainSettings().seed) if isinstance(settings, dict) else None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (count, first)):
        return None
    try:
        check_count(count)
    except FmnistError:
        return None
    return list(range(first, first + count))


def _planned_settings(record: dict[str, Any]) -> dict[str, Any]:
    """A group's settings as its resume plans them: with the defaults of settings added since it began."""
    from fmnist.settings import TrainSettings

    settings = run_settings.settings_of(record)
    if not settings:  # none to read (group.json damaged): no run is held to the defaults instead
        return {}
    try:
        return TrainSettings.from_dict(settings).to_dict()
    except FmnistError:  # damaged, or a later fmnist's: compared as it is (its resume refuses the group)
        return settings


def seed_groups(rows: list[dict[str, Any]], runs_dir: Path) -> list[dict[str, Any]]:
    """One entry per ``--seeds`` group among ``rows``: the mean and spread of its planned seeds' runs scored so far,
    each seed's run picked as the group's resume picks it."""
    from fmnist.seeds import accuracy_spread

    members: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        group = Path(row["run"]).parent
        if group != Path(".") and runs.is_seed_group(Path(runs_dir) / group):
            members.setdefault(group.as_posix(), []).append(row)
    groups = []
    for group, rows_of_group in members.items():
        record = _read_object(Path(runs_dir) / group / artifacts.SEED_GROUP, [])
        planned = _planned_seeds(record)
        shared = {**record, "settings": _planned_settings(record)}
        # Its runs as its resume picks them: one copied or edited in by hand is not the group's, so not in its mean
        # (its resume refuses them); a second run of a seed is listed, but the group counts one.
        found = run_settings.group_members(Path(runs_dir) / group, shared)
        row_of = {Path(r["run"]).name: r for r in rows_of_group}
        foreign = sorted(d.name for d in found.foreign)
        picked = {seed: row_of[d.name] for seed, d in found.picked.items()
                  if d.name in row_of and (planned is None or seed in planned)}
        counted = {Path(r["run"]).name for r in picked.values()}
        passed_over = {d.name: c.name for d, c in found.passed_over.items() if c.name in counted}
        scored = [row for row in picked.values() if row["status"] == runs.FINISHED and row["test_accuracy"] is not None]
        accuracies = [r["test_accuracy"] for r in scored]
        f1s = [r["macro_f1"] for r in scored if r["macro_f1"] is not None]
        seconds = [r["train_seconds"] for r in scored if r["train_seconds"] is not None]
        summary = Path(runs_dir) / group / artifacts.SEED_SUMMARY
        groups.append({
            "group": group, "path": str(runs.absolute(Path(runs_dir) / group)),
            # when the group began, as its folder's name says; its earliest run's where group.json cannot tell
            "created": record["created"] if isinstance(record.get("created"), str) and record["created"] else
            min((r["created"] for r in rows_of_group if r["created"]), default=""),
            "seeds": None if planned is None else len(planned), "planned_seeds": planned, "scored": len(scored),
            # as the group's summary.json has them (the sd with ddof 1); of a single seed scored, no spread
            "test_accuracy": accuracy_spread(accuracies) if accuracies else None,
            "macro_f1": statistics.fmean(f1s) if f1s else None,
            "train_seconds": statistics.fmean(seconds) if seconds else None,
            "summary": summary if summary.is_file() else None,
            "diverged": sorted(seed for seed, row in picked.items() if runs.diverged(Path(runs_dir) / row["run"])),
            "live": run_locks.being_trained(Path(runs_dir) / group),
            "foreign": foreign,
            "passed_over": passed_over,
        })
    return groups


def _note_passed_over(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> None:
    """Note on each run a group passed over for another of the same seed that the group counts instead."""
    for group in groups:
        for row in rows:
            counted = group["passed_over"].get(Path(row["run"]).name)
            if Path(row["run"]).parent.as_posix() == group["group"] and counted:
                row["notes"].append(f"not in its group's mean: the group counts its other run of seed "
                                    f"{row['settings']['seed']}, {counted}")


NOTE_INDENT = "    "  # a run's notes, each on a line of its own below it: the table stays as wide as its cells
MEMBER_INDENT = "  "  # a --seeds group's run, under its group's line: its own folder's name, which commands take too

# Left out first where the table is wider than the terminal: what tells one run from another least goes first.
NARROWING = ("backend", "limit", "batch", "lr", "seed", "network", "train s", "macro F1", "epochs (kept)")
NO_BREAK = "\u00a0"
STATUS_FITTED = 27  # the status counted as at most this wide ("mean of 10 seeds, sd 0.0123"): a longer one wraps


def terminal_width() -> int | None:
    """The terminal's width where stdout is one or COLUMNS gives it, else None: a pipe or a file gets every column
    unless COLUMNS is set."""
    given = os.environ.get("COLUMNS", "").strip()
    if given.isdigit() and int(given) > 0:  # a width set blank or wrong is as none set
        return int(given)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def format_runs(rows: list[dict[str, Any]], groups: list[dict[str, Any]] = (), runs_dir: Path = Path("."),
                width: int | None = None) -> str:
    """The runs as an aligned text table, a line each with its notes below; a ``--seeds`` group's or a folder's runs
    indented under its line. Columns are left out, and named, until the table fits ``width`` characters."""
    header = ["run", "recipe", "network", "lr", "batch", "limit", "seed", "backend", "epochs (kept)",
              "test acc", "macro F1", "train s", "status"]
    lines, notes = [header], {}
    groups_left = {g["group"]: g for g in groups}
    in_folder: dict[str, list[dict[str, Any]]] = {}  # a study's folder (or another holding runs), with its runs
    for r in rows:
        in_folder.setdefault(Path(r["run"]).parent.as_posix(), []).append(r)
    folders_left = set(in_folder) - set(groups_left) - {"."}
    newest = {parent: members[0] for parent, members in in_folder.items() if parent in groups_left}
    rows = _groups_by_seed(rows, newest)
    under = None  # the group or folder whose line, or a run of it, is the line above
    said_above = {}  # a group's note of the settings it changed: its runs, which share them, do not repeat it
    for r in rows:
        parent = Path(r["run"]).parent.as_posix()
        group = groups_left.pop(parent, None)
        if group:
            cells, notes[len(lines)], said_above[parent] = _group_line(group, newest[parent], Path(runs_dir))
            lines.append(cells)
            under = parent
        elif parent in folders_left:
            folders_left.remove(parent)
            lines.append([f"{parent}/", *["-"] * (len(header) - 2), _folder_status(parent, in_folder[parent])])
            under = parent
        elif parent != under:  # a run of its own, or one of a folder whose line stands above another's runs
            under = None
        s = r["settings"]
        recipe, changed_note = _recipe_cell(s)
        lines.append([
            MEMBER_INDENT + Path(r["run"]).name if under else r["run"], recipe, cell(run_settings.network_text(s)),
            cell(artifacts.json_number(s.get("learning_rate")), "{:.3g}"), cell(s.get("batch_size")),
            cell(s.get("limit")), cell(s.get("seed")),
            cell(r["backend"]), cell(r["epochs"]) + ("" if r["epoch_kept"] is None else f" ({r['epoch_kept']})"),
            cell(r["test_accuracy"], "{:.4f}"), cell(r["macro_f1"], "{:.4f}"), cell(r["train_seconds"], "{:.1f}"),
            r["status"],
        ])
        repeated = under is not None and said_above.get(under) == changed_note
        notes[len(lines) - 1] = [changed_note] * bool(changed_note and not repeated) + r["notes"]
    shown = [[_as_printed(c) for c in line] for line in lines]
    widths = [max(len(line[i]) for line in shown) for i in range(len(header))]
    kept, left_out = _columns_fitting(header, widths, width)
    printed = []
    for i, line in enumerate(shown):
        printed.append("  ".join(line[c].ljust(widths[c]) for c in kept).rstrip())
        printed += [NOTE_INDENT + _as_printed(note) for note in notes.get(i, [])]
    if left_out:
        # A column's name kept whole on one line ("train s"), as "--wide" is: no-break spaces, which wrap() keeps.
        names = ", ".join(name.replace(" ", NO_BREAK) for name in left_out)
        printed += [line.replace(NO_BREAK, " ") for line in textwrap.wrap(
            f"(left out to fit {width} characters: {names}; --wide shows them)", width, break_on_hyphens=False)]
    return "\n".join(printed)


def _columns_fitting(header: list[str], widths: list[int], width: int | None) -> tuple[list[int], list[str]]:
    """The columns kept, by index, and those left out, by name, in :data:`NARROWING`'s order, to fit ``width``."""
    kept = list(range(len(header)))

    def table_width() -> int:
        return sum(min(widths[c], STATUS_FITTED) if c == len(header) - 1 else widths[c] for c in kept) + 2 * (
            len(kept) - 1)

    left_out = []
    for name in NARROWING:
        if width is None or table_width() <= width:
            break
        kept.remove(header.index(name))
        left_out.append(name)
    return kept, left_out


def _folder_status(folder: str, members: list[dict[str, Any]]) -> str:
    """A folder of runs that is no ``--seeds`` group: a tune study's (its runs named as trials), or another."""
    plural = "" if len(members) == 1 else "s"
    if all(str(r["settings"].get("name", "")).startswith(defaults.TRIAL_PREFIX) for r in members):
        study = Path(folder).name
        # No command here: its page's needs the study's storage and runs folder, which the listing cannot know.
        return f"study {study}: {len(members)} trial run{plural}"
    return f"a folder of {len(members)} run{plural}"


def _as_printed(text: Any) -> str:
    """``text`` as the CLI's stdout writes it, measured so: a name that is not UTF-8 escaped, \\udcff for one byte."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _groups_by_seed(rows: list[dict[str, Any]], groups: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows (newest first) with each of the ``groups``' runs together where its newest one is, by seed."""
    def seed(row: dict[str, Any]) -> tuple[bool, int]:
        value = row["settings"].get("seed")
        return not isinstance(value, int), value if isinstance(value, int) else 0

    ordered, placed = [], set()
    for r in rows:
        parent = Path(r["run"]).parent.as_posix()
        if parent not in groups:
            ordered.append(r)
        elif parent not in placed:
            placed.add(parent)
            ordered += sorted((m for m in rows if Path(m["run"]).parent.as_posix() == parent), key=seed)
    return ordered


def _recipe_cell(settings: dict[str, Any]) -> tuple[str, str]:
    """The recipe column's cell ("spec +2": two settings changed) and the note naming what changed, with its values
    ("" if none)."""
    if not settings:
        return cell(None), ""
    recipe, changed = recipes.recipe_changes(settings)
    if not changed:
        return recipe, ""
    return f"{recipe} +{len(changed)}", f"{recipe} with {recipes.changes_text(changed, settings)}"


def _group_line(group: dict[str, Any], newest: dict[str, Any], runs_dir: Path) -> tuple[list[str], list[str], str]:
    """A group's line: the settings its runs share (as its newest run has them), and the mean of the runs scored, with
    their standard deviation; its notes on lines below; and the first of those alone."""
    # Its notes are as a run's are (the settings it changed in its recipe, and what to do about it); the first is
    # returned alone as its runs' lines do not repeat it.
    accuracy, planned, scored = group["test_accuracy"], group["seeds"], group["scored"]
    s = newest["settings"]
    status, note = f"{scored} of {planned} seeds scored", ""
    if planned is None:
        status, note = f"{scored} seeds scored", f"{artifacts.SEED_GROUP} damaged: {RESTORE}"
    elif group["foreign"]:
        note = (f"{', '.join(group['foreign'])}: settings, backend or data other than the group's (copied or edited "
                "there by hand): move it out of the group")
    elif group["diverged"]:  # resumed, it would diverge again
        note = f"seed {', '.join(map(str, group['diverged']))} diverged: {runs.GROUP_DIVERGED_ADVICE}"
    elif group["live"]:
        status += ", being trained"
    elif accuracy and scored == planned and group["summary"]:
        status = f"mean of {planned} seeds" + (f", sd {accuracy['std']:.4f}" if accuracy["std"] is not None else "")
    elif scored == planned:  # stopped before it wrote its summary
        status += f", no {artifacts.SEED_SUMMARY}"
        note = f"{runs.resume_command(runs_dir / group['group'])} writes it"
    else:
        note = f"{runs.resume_command(runs_dir / group['group'])} continues it"
    recipe, changed_note = _recipe_cell(s)
    return [
        group["group"] + "/", recipe, cell(run_settings.network_text(s)),
        cell(artifacts.json_number(s.get("learning_rate")), "{:.3g}"), cell(s.get("batch_size")), cell(s.get("limit")),
        f"{min(group['planned_seeds'])}-{max(group['planned_seeds'])}" if group["planned_seeds"] else "-",
        cell(newest["backend"]), "-", cell(accuracy and accuracy["mean"], "{:.4f}"),
        cell(group["macro_f1"], "{:.4f}"), cell(group["train_seconds"], "{:.1f}"), status,
    ], [changed_note] * bool(changed_note) + [note] * bool(note), changed_note


def require_scored(run_dir: Path, needed_for: str) -> None:
    """Refuse a run without test metrics, saying why it has none and what to do, since ``needed_for`` reads them."""
    if (Path(run_dir) / artifacts.METRICS).is_file():
        return
    if run_locks.being_trained(run_dir):
        raise FmnistError(f"{run_dir} is being trained right now; {needed_for} needs it scored: "
                          f"{run_locks.WAIT_FOR_TRAINING}")
    status = Path(run_dir) / artifacts.STATUS
    recorded = artifacts.read_json(status) if status.is_file() else {}
    state = recorded.get("state")
    # Stopped (killed even after its model was saved), or unfinished with no model to score.
    if state in runs.RESUMABLE or (state != runs.FINISHED and not (Path(run_dir) / artifacts.MODEL_SHA256).is_file()):
        # Its status as `fmnist runs` shows it: killed, say.
        shown = runs.state_now(run_dir, _recorded_state(recorded, []))
        raise FmnistError(f"{run_dir} has not finished training (status {shown}), so it has no test metrics for "
                          f"{needed_for}; {runs.how_to_finish(run_dir)}")
    # Stopped while it was scored (as `fmnist runs` says): its resume scores it, and a group's writes its summary too.
    scorer = runs.resume_command(run_dir) if state == runs.FINISHED else f"fmnist evaluate {run_dir}"
    raise FmnistError(f"{run_dir / artifacts.METRICS} is missing: '{scorer}' scores the run")
