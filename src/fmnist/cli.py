"""The `fmnist` command line: parse arguments and call one command module; nothing heavy is imported here."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

from fmnist import __version__, artifacts, defaults, stopping
from fmnist.cli_parser import (HelpFormatter, Parser, batch_size, input_file, int_between, layer_sizes, nonempty,
                               nonempty_path, patience, positive_int, positive_seconds, probability, seed_count)
from fmnist.errors import ErrorsPerInput, FmnistError, UsageError, error_text, first_line, one_line
from fmnist.settings import BACKENDS, DEFAULT_BACKEND, FLAG_SETTINGS, PREFERRED_BACKEND, RECIPES, TrainSettings, flag

log = logging.getLogger("fmnist")

TRAIN_DETAILS = f"""\
Each run goes to RUNS_DIR/<UTC time>-<name>/ (the runs/<id> of the examples), made for it alone: \
{artifacts.CONFIG}, {artifacts.HISTORY}, {artifacts.MODEL} with its SHA-256, {artifacts.METRICS}, the pictures and \
{artifacts.REPORT_HTML}. A killed run keeps every finished epoch: 'fmnist train --resume RUN' continues it."""

TUNE_DETAILS = """\
Each trial draws the hidden sizes from 7 choices (from 128,64 to 1024,512,256,128), dropout from 0 to 0.5, the \
learning rate from 1e-4 to 1e-2 (log scale), the batch size from 32, 64, 128 and 256 and the plateau factor \
(--lr-factor) from 0.1 to 0.5, with Optuna's TPE sampler (the factor only where a trial can train at a lowered \
rate: --epochs at least --lr-patience + 2, and --early-stopping-patience over --lr-patience); the spec's own \
settings are tried first. A trial scores \
its best epoch's val_loss, lower being better (the test set never chooses). Once 4 trials have finished, a trial \
whose val_loss from its second epoch on is worse than the median of theirs at the same epoch is stopped early: \
pruned. Without --limit and --epochs each trial trains as the spec does, on 48,000 images for up to 100 epochs, \
each as long as a full 'fmnist train': a first study is quicker on a subset, --limit 6000 --epochs 5."""

EXAMPLES = """\
examples:
  fmnist data                      where the data come from; verified by SHA-256
  fmnist data --show samples.png   a picture of ten images per class
  fmnist data --data-dir ~/fmnist  IDX files you downloaded yourself
  fmnist train                     the spec's recipe (512-256-64-32, batch 64, early stopping)
  fmnist train --epochs 3 --limit 12000 --name quick      a quick try on a stratified subset
  fmnist train --backend tensorflow   the spec's recipe on the spec's backend
  fmnist train --seeds 3           three seeds: mean, standard deviation and 95% confidence interval
  fmnist train --recipe best       our better dense network; --recipe cnn for a ConvNet
  fmnist train --recipe distilled --teacher runs/<cnn id>   a dense network taught by a ConvNet
  fmnist evaluate runs/<id>        re-score a saved run on the test set
  fmnist evaluate runs/<id> --json   the metrics as JSON
  fmnist report runs/<id>          rebuild the run's pictures and report.html
  fmnist runs                      every run, newest first: settings, test accuracy, time, status
  fmnist runs compare <A> <B>      one HTML page setting runs side by side (runs/compare.html)
  fmnist runs compare <group A> <group B>   two --seeds groups: each mean, and their difference with its interval
  fmnist export runs/<id> --format onnx    also saved_model or litert; checked against Keras
  fmnist train --resume runs/<id>  continue a killed or interrupted run from its last finished epoch
  fmnist tune --trials 20 --limit 6000 --epochs 5    an Optuna study (runs/tune.journal)
  fmnist tune --study s --storage postgresql://user:pw@host/db   one worker of many, on any machine
  fmnist tune --report s --storage postgresql://user:pw@host/db   its best trials and plots, as HTML
  fmnist bench --quick             seconds per epoch against plain Keras/PyTorch and the CPU's floor
  fmnist bench --output docs/bench.json   the full benchmark (and docs/bench.png)
  fmnist predict runs/<id> shirt.jpg boot.png --show seen.png   top-3 classes; --show draws where it looked
  fmnist predict runs/<id> photo.jpg --json   the top-3 classes as JSON (--top-k 10: all ten)
  fmnist serve runs/<id>           HTTP API and a web page on http://127.0.0.1:8000/
  fmnist serve runs/<id> --host 0.0.0.0 --port 8080   reachable from other machines
"""
EXIT_STATUS = """\
exit status:
  0    done
  1    an error, told in one line on stderr ("fmnist: error: ..."), or some inputs of predict refused
  2    a command line that cannot be taken (an unknown flag, a missing value, a value of the wrong form or out of
       its range, flags that do not go together)
  130  stopped by Ctrl-C (143: by SIGTERM, as from kill); a stopped training can be resumed
  141  the reader of its output went away (fmnist runs | head), as for any command in a pipe
"""

PREDICT_DETAILS = f"""\
A photo is prepared as Fashion-MNIST's images were made from product photos: its backdrop trimmed (even when noisy or
unevenly lit), the garment scaled to fit 28x28 and centred, turned light on dark if it is darker than its backdrop,
the backdrop 0 and the garment up to 1. An image already 28x28 keeps its layout. An array goes in as it is: floats in
[0, 1] or integers 0-255 (0s and 1s as integers, floats that lost their decimal point say, are refused: as pixels
they would be black; multiply them by 255, or give floats); a stack of n images, n x 28 x 28 or n x 784, is answered
image by image, as FILE[0], FILE[1], ... Files over
{defaults.MAX_FILE_MIB} MiB are refused. A file that cannot be read gets its error line and the exit status 1, and the
others are answered. --show draws what the model saw."""
SERVE_DETAILS = f"""\
  GET  /                 a web page: drop photos or draw a garment
  POST /v1/predict       multipart files (photos, .npy of one image each) or JSON {{"inputs": [28x28 or 784 values,
                         ...]}} (floats in [0, 1] or integers 0-255, as predict takes arrays), at most
                         {defaults.MAX_INPUTS} inputs a request; ?top_k=N (1 to 10, default {defaults.TOP_K}),
                         ?include_pixels=true (the 28x28 input seen), ?explain=true (occlusion maps)
  GET  /v1/model         the classes, the run's settings and test metrics, the limits, unsure_below
  GET  /v1/health        liveness, the model's SHA-256, the inputs answered, the forward passes and their rows
  GET  /metrics          Prometheus metrics: requests by route and status with their seconds, answers by class,
                         forward passes
  GET  /docs             the API's interactive docs (OpenAPI; the page loads Swagger UI from a CDN: it needs
                         internet, /openapi.json does not)

On a loopback --host (the default), requests must name this machine as localhost, 127.0.0.1 or [::1] in their
Host header: a web page elsewhere cannot reach the server through a name of its own (DNS rebinding); --allow-host
lets a reverse proxy's public name through. A page of another origin reads the answers only when --allow-origin
names it.

for example:
  curl -F files=@shirt.jpg -F files=@boot.png http://127.0.0.1:8000/v1/predict"""


def _examples(*command: str) -> str:
    """The lines of EXAMPLES for one command (``"runs", "compare"``: a subcommand's), as its --help's epilog."""
    lines = [line for line in EXAMPLES.splitlines()[1:] if tuple(line.split()[1:1 + len(command)]) == command]
    return "examples:\n" + "\n".join(lines) + "\n"


def _emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    try:  # flushed here, where a failed write is known to be the results'
        print(json.dumps(_finite(data), indent=2, default=_json_value, allow_nan=False) if args.json else text)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: no error (see _run_command)
        raise
    except OSError as exc:
        raise FmnistError(f"cannot write the results to standard output ({exc.strerror}): send them elsewhere, such "
                          "as a file on a disk with room") from None


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite number as null: JSON has none, and a strict reader refuses NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_value(value: Any) -> str:
    """A path as an absolute one, wherever it was given from (a script reading --json may run elsewhere)."""
    return _absolute(value) if isinstance(value, Path) else str(value)


def _absolute(path: Path | str) -> str:
    """A path as results name it, in text as in --json: absolute, to be found from any folder."""
    from fmnist.runs import absolute

    return str(absolute(path))


def cmd_data(args: argparse.Namespace) -> None:
    from fmnist.data import describe, describe_text

    summary = describe(args.data_dir, args.show)
    _emit(args, describe_text(summary), summary)


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in FLAG_SETTINGS if getattr(args, f, None) is not None}


def _settings_from_args(args: argparse.Namespace):
    from fmnist.recipes import recipe_settings

    return recipe_settings(getattr(args, "recipe", None) or "spec", args.runs_dir or defaults.RUNS_DIR,
                           **_given_settings(args))


def cmd_train(args: argparse.Namespace) -> None:
    with _stop_reported(args):
        _train(args)


@contextlib.contextmanager
def _stop_reported(args: argparse.Namespace, **more: Any) -> Iterator[None]:
    """A stop that left a run to finish, told on stdout too under --json (with ``more``, a study's name say): a
    script learns what to resume, as the log says."""
    try:
        yield
    except stopping.RunStopped as stop:
        if args.json:
            _emit(args, "", {"state": stop.state, "run_dir": stop.run_dir, "resume": stop.resume, **more})
        raise


def _train(args: argparse.Namespace) -> None:
    from fmnist.train import train_command

    if args.resume:
        _refuse_given(args, (*FLAG_SETTINGS, "recipe", "seeds"), "--resume continues a run with its own settings")
    settings = None if args.resume else _settings_from_args(args)
    _emit(args, *train_command(settings, args.backend, resume=args.resume, seeds=args.seeds, runs_dir=args.runs_dir,
                               data_dir=args.data_dir))


def _refuse_given(args: argparse.Namespace, names: tuple[str, ...], why: str) -> None:
    """Refuse the flags among ``names`` that were given, where they would be ignored."""
    given = [flag(name) for name in names if getattr(args, name, None) is not None]
    if given:
        raise UsageError(f"{why}; drop {', '.join(given)}")


def cmd_tune(args: argparse.Namespace) -> None:
    if args.output and not args.report:
        raise UsageError("--output names the page that --report STUDY writes: add --report or leave --output out")
    if args.runs_dir is not None:  # each of tune's three uses would make it, and the folders above it
        from fmnist.runs import require_runs_dir_place

        require_runs_dir_place(args.runs_dir)
    if args.study is not None and args.study in (args.report, args.train_best):  # the same study said twice
        args.study = None
    if args.report:
        _tune_report(args)
    elif args.train_best:
        _tune_train_best(args)
    else:
        _tune_study(args)


def _tune_report(args: argparse.Namespace) -> None:
    _refuse_given(args, (*FLAG_SETTINGS, "trials", "timeout", "backend", "study", "data_dir"),
                  "--report only draws the study it names as it is")
    from fmnist.tune_report import write_report

    path = write_report(args.report, storage=args.storage, runs_dir=args.runs_dir, output=args.output)
    _emit(args, f"report: {_absolute(path)}", {"report": path})


def _tune_train_best(args: argparse.Namespace) -> None:
    _refuse_given(args, ("trials", "timeout", "study"), "--train-best trains one run of the study it names")
    from fmnist.report import training_summary
    from fmnist.tune import train_best

    with _stop_reported(args):
        result = train_best(args.train_best, _given_settings(args), args.backend, storage=args.storage,
                            runs_dir=args.runs_dir, data_dir=args.data_dir)
    _emit(args, *training_summary(result))


def _tune_study(args: argparse.Namespace) -> None:
    base = _settings_from_args(args)
    from fmnist.tune import summary, tune

    study = args.study or defaults.TUNE_STUDY
    # A trial's run stopped: continuing the study finishes it, as its resume does.
    with _stop_reported(args, study=study, continue_study="the same 'fmnist tune' command"):
        result = tune(base, args.backend, args.trials or defaults.TUNE_TRIALS, study, storage=args.storage,
                      runs_dir=args.runs_dir, data_dir=args.data_dir, timeout=args.timeout)
    _emit(args, summary(result), result.record())


def cmd_evaluate(args: argparse.Namespace) -> None:
    from fmnist.evaluate import evaluate_command
    from fmnist.report import headline

    run, metrics = evaluate_command(args.run, args.runs_dir, args.data_dir, args.backend)
    _emit(args, headline(run, metrics), {"run_dir": run, **metrics, "report": run / artifacts.REPORT_HTML})


def cmd_report(args: argparse.Namespace) -> None:
    from fmnist.report import report_command

    path = report_command(args.run, args.runs_dir)
    _emit(args, f"report: {_absolute(path)}", {"report": path})


def cmd_bench(args: argparse.Namespace) -> None:
    from fmnist.bench import bench, table

    report = bench(args.output, quick=args.quick, data_dir=args.data_dir)
    chart = report.get("chart")  # none where it could not be drawn: the figures are kept all the same
    written = (f"{_absolute(args.output)} and {_absolute(chart)}" if chart else
               f"{_absolute(args.output)} (no chart: the warning above says why)")
    _emit(args, table(report) + f"\nwritten: {written}", {**report, **({"chart": Path(chart)} if chart else {})})


def cmd_runs(args: argparse.Namespace) -> None:
    from fmnist.run_list import runs_command

    _emit(args, *runs_command(args.runs_dir, args.wide))


def cmd_runs_compare(args: argparse.Namespace) -> None:
    from fmnist.compare import compare_command
    from fmnist.run_list import runs_folder

    if getattr(args, "wide", False):  # 'fmnist runs --wide compare ...': the flag of the listing, given before compare
        raise UsageError("--wide widens the table of 'fmnist runs'; compare draws a page: leave --wide out")
    result = compare_command(args.runs, args.output, runs_folder(args.runs_dir))
    difference = result["group_difference"]  # the page's verdict on two recipes, the command's result too
    _emit(args, f"comparison: {_absolute(result['comparison'])}" + (f"\n{difference['text']}" if difference else ""),
          result)


def cmd_export(args: argparse.Namespace) -> None:
    from fmnist.export import export_command, summary_text

    run, record = export_command(args.run, args.format, args.runs_dir, args.data_dir, args.backend)
    _emit(args, summary_text(run, record), {**record, "run_dir": run, "path": run / record["file"]})


def cmd_predict(args: argparse.Namespace) -> int:
    from fmnist.predict import as_text, predict_command

    try:
        result = predict_command(args.model, args.images, args.runs_dir, top_k=args.top_k,
                                 unsure_below=args.unsure_below, show=args.show, backend=args.backend,
                                 save_inputs=args.save_inputs)
    except ErrorsPerInput as unread:  # a script reading --json gets the same shape when no file could be read
        if args.json:
            _emit(args, "", {"predictions": [], "errors": unread.failures})
        raise
    shown = f"\nshown: {one_line(_absolute(result['shown']))}" if "shown" in result else ""
    if "saved_inputs" in result:
        shown += f"\ninputs saved: {one_line(_absolute(result['saved_inputs']))}"
    _emit(args, as_text(result) + shown, result)
    for failure in result["errors"]:  # the others answered above; each unreadable file gets its line, as alone
        _say_error(failure["error"])
    return 1 if result["errors"] else 0


def cmd_serve(args: argparse.Namespace) -> None:
    from fmnist.model_files import verified_model_path
    from fmnist.run_lookup import resolve_model

    source = resolve_model(args.run, args.runs_dir)
    verified_model_path(source)  # refused in a moment, before FastAPI loads
    from fmnist.serve import serve_command

    serve_command(source, args.runs_dir, args.backend, host=args.host, port=args.port,
                  max_upload_mib=args.max_upload_mb, max_batch=args.max_batch, access_log=not args.quiet,
                  allowed_hosts=args.allow_host, allowed_origins=args.allow_origin, unsure_below=args.unsure_below,
                  proxy_prefix=args.root_path or "")


QUIET_HELP = "no progress: only results, warnings and errors"


def _common(p: argparse.ArgumentParser, json_result: bool = True, quiet_help: str = QUIET_HELP) -> None:
    # SUPPRESS: given before the command or after it, these keep the value given (argparse would reset them).
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of any error")
    if json_result:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the result as JSON on stdout")


def _command(sub: Any, name: str, handler: Callable, help_text: str,
             json_result: bool = True, details: str = "", quiet_help: str = QUIET_HELP) -> argparse.ArgumentParser:
    """A command's parser: ``help_text`` in the list of commands, and with ``details`` after it in its own --help."""
    p = sub.add_parser(name, help=help_text, description=_wrapped(f"{help_text}\n\n{details}".strip()),
                       epilog=_examples(name),
                       formatter_class=HelpFormatter)
    p.set_defaults(handler=handler, command_parser=p)
    _common(p, json_result, quiet_help)
    return p


def _wrapped(text: str) -> str:
    """Paragraphs filled to the terminal's usual width; one with indented lines (a table) stays as laid out."""
    return "\n\n".join(
        paragraph if re.search(r"^\s", paragraph, re.MULTILINE)
        else textwrap.fill(paragraph, 79, break_on_hyphens=False, break_long_words=False)  # a --flag stays whole
        for paragraph in text.split("\n\n"))


def _runs_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", type=nonempty_path, default=Path(defaults.RUNS_DIR),
                   help=f"where a RUN given by name is looked up (default ./{defaults.RUNS_DIR})")


RUN_NAMES_HELP = "its folder's, or the --name it was trained with where no other run there has it"


def _run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=nonempty_path, metavar="RUN",
                   help=f"a run directory made by 'fmnist train', or its name in --runs-dir: {RUN_NAMES_HELP}")
    _runs_dir(p)


def _model_argument(p: argparse.ArgumentParser, dest: str) -> None:
    """A run, or a model without its run (which carries what predicting needs)."""
    p.add_argument(dest, type=nonempty_path, metavar="RUN",
                   help=f"a run directory made by 'fmnist train', its name in --runs-dir ({RUN_NAMES_HELP}), or its "
                        f"{artifacts.MODEL} with {artifacts.MODEL_SHA256} beside it (the run's other files not needed)")
    _runs_dir(p)


def _data_dir(p: argparse.ArgumentParser, test_only: bool = False) -> None:
    files = "the test set's two IDX files, t10k-* (.gz or raw; the training files need not be there)" if test_only \
        else "the four IDX files (.gz or raw)"
    p.add_argument("--data-dir", type=nonempty_path, default=None,
                   help=f"folder with {files}; default: the environment variable FMNIST_DATA_DIR, else Keras' "
                        "cache (~/.keras/datasets/fashion-mnist, or in KERAS_HOME), the Debian package "
                        "dataset-fashion-mnist, then Keras' download (needs internet)")


def _backend(p: argparse.ArgumentParser, by_model: bool = False, loads_run: bool = False) -> None:
    by_architecture = ", ".join(f"{name} for {'dense networks' if architecture == 'dense' else 'the ConvNet'}"
                                for architecture, name in PREFERRED_BACKEND.items())
    measured = f"the one measured faster on CPU for the model: {by_architecture}" if by_model else DEFAULT_BACKEND
    either = "; a model runs on either, whichever trained it, within float32's rounding" if loads_run else ""
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help=f"Keras backend (default: the environment variable KERAS_BACKEND, else {measured}); "
                        f"tensorflow is the spec's{either}")


def _fixed_settings(p: argparse.ArgumentParser, recipes: bool) -> None:
    """The settings that both train and tune take (tune searches the others); only train has --recipe."""
    spec = TrainSettings()  # the defaults the help quotes
    default = "the recipe's; spec" if recipes else "the spec's,"
    _data_dir(p)
    _backend(p, by_model=recipes)  # tune trains the spec's dense network alone
    # tune's default depends on --storage (tune_storage.default_runs_dir).
    p.add_argument("--runs-dir", type=nonempty_path, default=Path(defaults.RUNS_DIR) if recipes else None,
                   help=f"where run directories go (default ./{defaults.RUNS_DIR})" if recipes else
                   f"where run directories go (default: the folder of a journal file given as --storage, else "
                   f"./{defaults.RUNS_DIR}; --report and --train-best: that folder where it holds a journal's study's "
                   f"STUDY/ folder, as a copied study's does, else the one its trials ran in)")
    p.add_argument("--epochs", type=positive_int,
                   help=("epochs to train: the plateau schedule's early stopping may end sooner, the cosine "
                         "recipes run them all" if recipes else
                         "at most this many epochs a trial; early stopping or pruning may end it sooner")
                   + f" (default: {default} {spec.epochs})")
    p.add_argument("--validation-fraction", type=float,
                   help="share of the training images (the 60,000, or --limit's N) held out for validation, "
                        f"between 0 and 1 (default: {default} {spec.validation_fraction})")
    p.add_argument("--early-stopping-patience", type=patience,
                   help="epochs in a row without a lower val_loss (the validation split's) before training stops, "
                        "the best epoch's weights kept; spec recipe's plateau schedule "
                        f"(default {spec.early_stopping_patience})")
    p.add_argument("--lr-patience", type=patience,
                   help="epochs in a row without a lower val_loss before the learning rate is multiplied by "
                        f"--lr-factor; spec recipe's plateau schedule (default {spec.lr_patience})")
    p.add_argument("--seed", type=int,
                   help=f"seed for split, weights and shuffling, 0 to 2**32 - 1 (default {spec.seed})")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="use a stratified subset of N training images, validation split included (at least 10 "
                        "images for training and 10 for validation, one a class: 48 or more at the spec's 0.2, 95 at "
                        "0.1), for quick tries "
                        "(default: all 60,000)")


def _add_data(sub: Any) -> None:
    p = _command(sub, "data", cmd_data, "Locate, verify (IDX header and SHA-256) and describe the dataset.")
    _data_dir(p)
    p.add_argument("--show", type=nonempty_path, metavar="PNG", help="write a grid of sample images, one row per class")


def _add_train(sub: Any) -> None:
    spec = TrainSettings()
    p = _command(sub, "train", cmd_train,
                 "Train a model (the spec's recipe by default), evaluate it and write the report.",
                 details=TRAIN_DETAILS)
    _fixed_settings(p, recipes=True)
    p.add_argument("--name", help="run name, the suffix of the run directory: letters, digits, '-', '_' and '.', at "
                                  f"most {defaults.MAX_NAME_BYTES} bytes (default: the recipe's name)")
    p.add_argument("--batch-size", type=batch_size,
                   help=f"images per step, 2 or more (BatchNorm's statistics need two; default: the recipe's; "
                        f"spec {spec.batch_size})")
    p.add_argument("--learning-rate", "--lr", type=float,
                   help="initial (or peak) learning rate of Adam or AdamW "
                        f"(default: the recipe's; spec {spec.learning_rate:g}, Adam's own, as the spec gives none)")
    p.add_argument("--hidden-sizes", type=layer_sizes, metavar="N,N,...",
                   help="hidden layer widths of a dense network, 512,256 or as tables write them, 512-256 "
                        f"(default: the recipe's; spec {','.join(map(str, spec.hidden_sizes))})")
    p.add_argument("--dropout", type=float,
                   help=f"dropout after each hidden layer (the ConvNet's: after its Dense layer alone), from 0 to "
                        f"under 1 (default: the recipe's; spec {spec.dropout})")
    p.add_argument("--lr-factor", type=float,
                   help="learning rate multiplier on a val_loss plateau, between 0 and 1; spec recipe's plateau "
                        f"schedule (default {spec.lr_factor}, "
                        "ReduceLROnPlateau's own, as the spec gives none)")
    p.add_argument("--recipe", choices=tuple(RECIPES),
                   help="spec: the spec's dense recipe, early stopping and a plateau schedule (default); the others "
                        "run their epochs with a cosine-decaying learning rate: best: our better dense network "
                        "(2x1024, AdamW, label smoothing); distilled: a dense network that learns a trained run's "
                        "probabilities too (--teacher); cnn: a ConvNet of three convolutions (a good teacher). Test "
                        "accuracy, mean of 3 seeds in README's Results: spec 89.5%%, best 90.9%%, distilled 92.2%%, "
                        "cnn 93.5%%. Other flags override the recipe; one it would ignore is refused")
    p.add_argument("--teacher", type=nonempty, metavar="RUN",
                   help="distil from this trained run (with --recipe distilled): its directory, its name in "
                        f"--runs-dir, or its {artifacts.MODEL}")
    p.add_argument("--seeds", type=seed_count, metavar="N",
                   help=f"train N seeds (seed, seed+1, ...; N from 2 to {defaults.MAX_SEEDS}) in one group directory; "
                        "report the test accuracy's mean, standard deviation and 95%% confidence interval "
                        "(default: one run)")
    p.add_argument("--resume", type=nonempty_path, metavar="RUN",
                   help="continue this killed or interrupted run from its last finished epoch, with its own "
                        "settings and backend; given a --seeds group, finish its unfinished and missing seeds and "
                        "its summary")


def _add_tune(sub: Any) -> None:
    p = _command(sub, "tune", cmd_tune, "Search the spec's dense network's hidden sizes, dropout, learning rate, "
                                        "batch size and plateau factor with Optuna (the other settings, given as the "
                                        "flags below, stay fixed); each trial is a normal run, judged on the "
                                        "validation split. Run it in several processes or machines to work in "
                                        "parallel.",
                 details=TUNE_DETAILS)
    _fixed_settings(p, recipes=False)
    p.add_argument("--study", type=nonempty,
                   help=f"study name (letters, digits, '-', '_' and '.', at most {defaults.MAX_STUDY_NAME_BYTES} "
                        "bytes): its trials' runs go in "
                        f"RUNS_DIR/STUDY/; rerunning continues it (default {defaults.TUNE_STUDY})")
    p.add_argument("--storage", type=nonempty, metavar="URL|FILE",
                   help="where the study lives: postgresql://user:password@host/db to share it between machines, "
                        "sqlite:///file.db (best for one process at a time), or a journal file for the processes of "
                        f"one machine (default RUNS_DIR/{artifacts.TUNE_JOURNAL})")
    p.add_argument("--trials", type=positive_int, help=f"trials this process runs (default {defaults.TUNE_TRIALS})")
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="start no new trial after this long (default: no limit; --trials still applies)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--report", type=nonempty, metavar="STUDY",
                      help="write the study's HTML report (best trials, Optuna's plots); give the study's --storage "
                           "unless it is the default")
    what.add_argument("--train-best", type=nonempty, metavar="STUDY",
                      help="train the study's best settings as one normal run, keeping the study's --seed, "
                           "--validation-fraction and patiences and the best trial's backend unless given here, but "
                           "not the trials' --limit and --epochs: all 60,000 images for up to the spec's 100 epochs "
                           "unless given here")
    p.add_argument("--output", type=nonempty_path, metavar="HTML",
                   help=f"where --report writes (default RUNS_DIR/STUDY/{artifacts.TUNE_REPORT})")


def _add_evaluate(sub: Any) -> None:
    p = _command(sub, "evaluate", cmd_evaluate, "Re-score a run's model (SHA-256 checked) on the 10,000 test images: "
                                                "rewrites the run's metrics, predictions, pictures and report, and "
                                                "nothing else.")
    _run_argument(p)
    _data_dir(p, test_only=True)
    _backend(p, loads_run=True)


def _add_report(sub: Any) -> None:
    p = _command(sub, "report", cmd_report, f"Rebuild a run's pictures and {artifacts.REPORT_HTML} from its files.")
    _run_argument(p)


def _add_runs(sub: Any) -> None:
    p = _command(sub, "runs", cmd_runs, "List the runs, newest first: settings, test accuracy, macro F1 (F1 averaged "
                                        "over the ten classes), training seconds, status; a --seeds group's line "
                                        "gives its runs' mean. "
                                        "'fmnist runs compare --help' tells how to compare some of them.")
    # None when not given: a folder the user names must exist, the default ./runs not yet.
    p.add_argument("--runs-dir", type=nonempty_path, default=None,
                   help=f"where run directories are (default ./{defaults.RUNS_DIR})")
    p.add_argument("--wide", action="store_true",
                   help="every column, however wide the terminal (by default the columns that say least are left out "
                        "until the table fits it, or the width COLUMNS gives; a pipe or a file gets every column "
                        "unless COLUMNS is set)")
    compare_help = ("Write one HTML page comparing runs: settings, learning curves, per-class F1, and the classes "
                    "whose mistakes changed most between them; of a run in training, or stopped, its settings and "
                    "curves so far.")
    p = p.add_subparsers(dest="runs_command", metavar="compare").add_parser(
        "compare", help=compare_help, description=_wrapped(compare_help), epilog=_examples("runs", "compare"),
        formatter_class=HelpFormatter)
    p.set_defaults(handler=cmd_runs_compare, command_parser=p)
    p.add_argument("runs", type=nonempty_path, nargs="+", metavar="RUN",
                   help="two or more run directories, or their names in --runs-dir, or one or more --seeds groups; a "
                        f"group stands for its runs, one per seed (those its {artifacts.SEED_SUMMARY} averages)")
    # SUPPRESS: given before 'compare' or after it, these keep the value given (argparse would reset them).
    p.add_argument("--runs-dir", type=nonempty_path, default=argparse.SUPPRESS,
                   help=f"where run directories are (default ./{defaults.RUNS_DIR})")
    p.add_argument("--output", type=nonempty_path, metavar="HTML",
                   help=f"where to write the page (default {artifacts.COMPARISON_HTML} in RUNS_DIR when the runs "
                        "lie there, else in their folder when they all lie in one; runs in different folders need "
                        "--output)")
    _common(p)


def _add_export(sub: Any) -> None:
    p = _command(sub, "export", cmd_export, "Export a run's model with Keras (ONNX, TensorFlow SavedModel or LiteRT), "
                                            "then check the file with its own runtime against Keras on "
                                            f"{defaults.EXPORT_PARITY_IMAGES:,} test images: no class's probability "
                                            f"may differ by more than {defaults.EXPORT_TOLERANCE:g}.")
    _run_argument(p)
    p.add_argument("--format", required=True, choices=tuple(artifacts.EXPORT_FILES),
                   help=f"the file format, written to RUN/{artifacts.EXPORTS_DIR}/FORMAT/ with a record of the check")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="Keras backend that writes the file (default: KERAS_BACKEND, else tensorflow, "
                        "which writes every format; jax writes saved_model only)")
    _data_dir(p, test_only=True)


def _add_bench(sub: Any) -> None:
    p = _command(sub, "bench", cmd_bench,
                 "Time training and inference against plain Keras/PyTorch scripts and the CPU.")
    p.add_argument("--output", type=nonempty_path, default=Path(defaults.BENCH_JSON), metavar="JSON",
                   help="where to write the JSON, with a bar chart beside it as .png (default %(default)s); a bench "
                        "stopped short writes JSON's name with .partial.json instead (bench.partial.json), keeping "
                        "an earlier complete one")
    p.add_argument("--quick", action="store_true",
                   help="3 epochs per contender instead of 6, for a short run (the first, which compiles, is timed "
                        "apart: the median of the other 2 is the epoch time)")
    _data_dir(p)


def _unsure_below(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unsure-below", type=probability, default=defaults.UNSURE_BELOW, metavar="P",
                   help="call the model unsure when its top probability is under P, from 0 to 1 (default "
                        f"%(default)s, that is {defaults.UNSURE_BELOW:.0%}%)")


def _add_predict(sub: Any) -> None:
    p = _command(sub, "predict", cmd_predict, "Classify photos (PNG, JPEG, WebP, BMP, GIF) or .npy arrays (28x28 or "
                                              "784 values, or stacks of them) with a run's model, prepared the way "
                                              "Fashion-MNIST was made.", details=PREDICT_DETAILS)
    _model_argument(p, "model")
    p.add_argument("images", type=input_file, nargs="+", metavar="IMAGE",
                   help=f"image or .npy files; {defaults.STDIN} reads one piped in")
    p.add_argument("--top-k", type=int_between(1, 10), default=defaults.TOP_K,  # Fashion-MNIST's ten classes
                   help=f"classes listed per image, 1 to 10 (default {defaults.TOP_K})")
    _unsure_below(p)
    p.add_argument("--show", type=nonempty_path, metavar="PNG",
                   help="write the 28x28 inputs the model saw (the first 64), what in each spoke for its top class "
                        "(occlusion: 4x4 patches blanked in turn) and the probabilities")
    p.add_argument("--save-inputs", type=nonempty_path, metavar="NPY",
                   help="save the inputs as the model took them (photos prepared), n x 784 float32 in the answers' "
                        "order: what an exported model takes (fmnist export)")
    _backend(p, loads_run=True)


def _add_serve(sub: Any) -> None:
    p = _command(sub, "serve", cmd_serve, "Serve a run's model over HTTP: POST /v1/predict, a web page at /, docs at "
                                          "/docs.", json_result=False, details=SERVE_DETAILS,
                 quiet_help="no progress and no access log (a line per request): only warnings and errors")
    _model_argument(p, "run")
    p.add_argument("--host", type=nonempty, default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 every interface; an "
                        "IPv6 one such as ::1, with or without brackets)")
    p.add_argument("--port", type=int_between(0, 65535), default=8000,
                   help="port (default 8000; 0: a free one, named in the 'serving ... on URL' line)")
    p.add_argument("--max-upload-mb", type=int_between(1, 1024), default=defaults.MAX_UPLOAD_MIB,
                   help="largest request body, in MiB, 1 to 1024: each is held in memory while it is read "
                        "(default %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=defaults.MAX_BATCH,
                   help="most inputs of concurrent requests combined into one forward pass (a request's own, at "
                        f"most {defaults.MAX_INPUTS}, always go together); 1 combines none (default %(default)s)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="on a loopback --host, also answer requests whose Host header names NAME: the public name "
                        "a reverse proxy on this machine passes on (Caddy does, nginx with proxy_set_header Host "
                        "$host); again for another")
    p.add_argument("--root-path", type=nonempty, default=None, metavar="PREFIX",
                   help="the path under which a reverse proxy serves the app, stripping it before it passes a request "
                        "on (such as /fmnist): the API's docs at /docs then find their OpenAPI file; the web page "
                        "works under any prefix without it")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let the scripts of web pages from ORIGIN (scheme://host:port, such as http://localhost:3000; "
                        "* for any) call the API and read its answers (CORS); again for another (default: none, only "
                        "the server's own page at /)")
    _unsure_below(p)
    _backend(p, loads_run=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fmnist", description=_wrapped(
            "Train, evaluate, explain and serve a Fashion-MNIST classifier (Keras 3). By default it trains the spec's "
            "recipe, the classic one it reproduces: a dense network of 512, 256, 64 and 32 units, each with "
            "BatchNorm, ReLU and Dropout 0.3; Adam, batch 64, up to 100 epochs, stopped early when the validation "
            "loss stops falling. --recipe picks a better one."),
        epilog=f"{EXAMPLES}\n{EXIT_STATUS}", formatter_class=HelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_data, _add_train, _add_tune, _add_evaluate, _add_report, _add_runs, _add_export, _add_bench,
                _add_predict, _add_serve):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A file name that is not UTF-8 (another system's) is printed escaped. Left so for an in-process caller: a flush
    # that putting it back would make could fail on a closed pipe.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    with progress_on_stderr(args.quiet), stopping.handled():
        return _run_command(args)


class ProgressFormatter(logging.Formatter):
    """A progress line as it is; a warning after "fmnist: warning: ", as an error comes after "fmnist: error: ", so
    that it stands out among the progress (and says whose it is under -q, where it is alone)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        warned = record.levelno >= logging.WARNING and not getattr(record, defaults.PLAIN_LOG, False)
        return f"fmnist: warning: {text}" if warned else text


@contextlib.contextmanager
def progress_on_stderr(quiet: bool) -> Iterator[None]:
    """fmnist's log on stderr, one line a message; libraries' warnings after their level and logger's name, as
    ``logging.basicConfig`` shows them (TensorFlow's as it sets them up itself)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ProgressFormatter())
    handlers, level = log.handlers[:], log.level  # put back for a caller that runs commands in its own process
    log.handlers[:] = [handler]  # our progress only; libraries keep their own (quieter) defaults
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    # absl (TensorFlow's logging) sets up the root logger when it finds it bare, and fmnist's messages would then be
    # printed a second time, prefixed: held by a stand-in that leaves ours alone.
    stand_in = logging.StreamHandler(sys.stderr)
    stand_in.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    stand_in.setLevel(logging.WARNING)
    stand_in.addFilter(lambda record: not (record.name == log.name or record.name.startswith(f"{log.name}.")))
    bare = not logging.root.handlers
    if bare:
        logging.root.addHandler(stand_in)
    try:
        yield
    finally:
        log.handlers[:] = handlers
        log.setLevel(level)
        if bare:
            logging.root.removeHandler(stand_in)


def _say_error(text: str) -> None:
    print(f"fmnist: error: {one_line(text)}", file=sys.stderr)


def _run_command(args: argparse.Namespace) -> int:
    if sys.stdout is None:  # closed (`>&-`): the results would be lost, after all the work
        _say_error("standard output is closed, where the results go: give it a file or a pipe")
        return 1
    try:
        status = args.handler(args) or 0  # a command that did part of its work says so in its exit status
        stopping.check()  # a Ctrl-C that Python swallowed while the command ran still counts
        sys.stdout.flush()  # here, where a closed pipe can still be caught, rather than at exit
    except UsageError as exc:
        args.command_parser.error(str(exc))
    except FmnistError as exc:
        if args.debug:  # what Keras or the system said underneath the one-line error
            raise
        for line in exc.errors if isinstance(exc, ErrorsPerInput) else [str(exc)]:  # a line each, several inputs
            _say_error(line)
        return 1
    except KeyboardInterrupt:
        return stopping.stopped()
    except BrokenPipeError:  # the reader went away (`fmnist runs | head`): not an error worth a line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except Exception as exc:  # the last guard: one line, not a traceback, unless --debug
        if args.debug:
            raise
        if stopping.requested():  # the stop, turned by a library into an error of its own (TensorFlow's saving)
            return stopping.stopped()
        if isinstance(exc, OSError) and exc.strerror:  # the system refused a file (permissions, full disk, long name)
            _say_error(error_text(exc))
        else:  # one line still: a database driver's message says more on the lines after (--debug shows them)
            _say_error(f"unexpected {type(exc).__name__}: {one_line(first_line(exc))} (rerun with --debug for details)")
        return 1
    return status


def run() -> NoReturn:
    """The `fmnist` program: main(), then the process ends as its exit status says (a stopped one at once)."""
    status = main()
    if status in stopping.STOP_STATUSES:
        stopping.end_process(status)
    stopping.keep_status_on_stop(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
