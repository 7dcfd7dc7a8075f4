"""The command line as fmnist reads it (fmnist.cli_parser): malformed input is one line that says what was meant."""

from pathlib import Path

import pytest


def test_files_given_after_an_option_join_the_commands_list_and_anything_else_stays_an_error(capsys):
    from fmnist.cli import build_parser

    parsed = build_parser().parse_args(["predict", "run", "a.png", "--show", "seen.png", "b.png", "-", "--top-k", "2"])
    assert parsed.images == [Path("a.png"), Path("b.png"), "-"] and parsed.show == Path("seen.png")
    parsed = build_parser().parse_args(["runs", "compare", "one", "--output", "page.html", "two"])
    assert parsed.runs == [Path("one"), Path("two")] and parsed.output == Path("page.html")
    for argv, said in ((["predict", "run", "a.png", "--json", "b.png", "--topk", "2"], "unrecognized arguments: b.png"),
                       (["predict", "run", "a.png", "--json", ""], "argument IMAGE: empty (an unset shell variable?)"),
                       (["evaluate", "run", "--json", "more"], "unrecognized arguments: more")):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(argv)
        assert stop.value.code == 2 and said in capsys.readouterr().err, argv


def test_a_mistyped_choice_gets_the_nearest_one_and_explain_its_command(capsys):
    from fmnist.cli import main

    for argv, hint in ((["predcit", "x"], "did you mean 'predict'?"), (["train", "--recipe", "bset"],
                                                                      "did you mean 'best'?"),
                       (["explain", "x"], "'fmnist predict RUN IMAGE --show seen.png' draws what the model looked at"),
                       (["seeds", "3"], "; 'fmnist train --seeds N' trains one run a seed"),  # not 'serve'?
                       (["train", "--recipe", "CNN"], "did you mean 'cnn'?"),
                       (["runs", "s1"], "'fmnist runs' takes no name: 'fmnist runs --runs-dir FOLDER' lists the runs "
                                        "in a folder (a study's, say), 'fmnist runs compare RUN RUN' compares runs"),
                       (["runs", "comapre"], "did you mean 'compare'?"),
                       (["zzz"], ""), (["train", "--recipe", "explain"], ""), (["train", "--recipe", "help"], "")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        error = capsys.readouterr().err
        assert stop.value.code == 2 and error.count("\n") == 1 and "invalid choice" in error, argv
        assert (hint in error) if hint else ("did you mean" not in error and "--show" not in error), error
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "run", "x\ny"])  # a newline in a stray argument, escaped as elsewhere
    assert stop.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: unrecognized arguments: x\\ny (see 'fmnist evaluate --help')\n")
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "cnn"])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: unrecognized arguments: --model cnn; the ConvNet is a recipe: --recipe cnn (--recipe best for "
        "the best dense network) (see 'fmnist train --help')\n")
    with pytest.raises(SystemExit) as stop:  # where a run is given, the model is the run's
        main(["predict", "--model", "runs/a", "shirt.png"])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: unrecognized arguments: --model; a run holds its model: give the run, its folder or its name, "
        "as the first argument after the command's name (see 'fmnist predict --help')\n")
    with pytest.raises(SystemExit) as stop:  # and no hint where neither is
        main(["bench", "--model", "x"])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: unrecognized arguments: --model x (see 'fmnist bench --help')\n")
    with pytest.raises(SystemExit) as stop:  # what tune searches, fixed: said once for both
        main(["tune", "--batch-size", "64", "--dropout=0.2"])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: unrecognized arguments: --batch-size 64 --dropout=0.2; tune trains the spec's dense network "
        "alone, searching its hidden sizes, dropout, learning rate, batch size and plateau factor itself: 'fmnist "
        "train' takes these, and --recipe and --teacher, as flags (see 'fmnist tune --help')\n")


def test_a_command_flag_given_before_the_command_says_where_it_goes(capsys):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--json", "runs"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("fmnist: error: --json belongs after the command's name: fmnist runs --json ... "
                                       "(see 'fmnist runs --help')\n")


@pytest.mark.parametrize("args, refusal", [
    (["predict", "run", "x.png", "--top-k", "11"], "argument --top-k: '11' must be from 1 to 10"),
    (["predict", "run", "x.png", "--top-k", "0"], "argument --top-k: '0' must be from 1 to 10"),
    (["predict", "run", "x.png", "--unsure-below", "1.5"], "argument --unsure-below: '1.5' must be from 0 to 1"),
    (["serve", "run", "--port", "70000"], "argument --port: '70000' must be from 0 to 65535"),
    (["serve", "run", "--port", "-1"], "argument --port: '-1' must be from 0 to 65535"),
    (["serve", "run", "--max-upload-mb", "100000"], "argument --max-upload-mb: '100000' must be from 1 to 1024"),
    (["train", "--seeds", "1"],
     "argument --seeds: a spread and an interval need 2 seeds or more, not 1 (for one run, leave --seeds out)"),
    (["train", "--seeds", "1001"], "argument --seeds: at most 1000 seeds, not 1001: each of them is a full training"),
    (["train", "--hidden-sizes", "512,,64"],  # a typo would lose a layer
     "argument --hidden-sizes: '512,,64' is not a list of sizes such as 512,256,64,32 (or 512-256-64-32)"),
    (["train", "--hidden-sizes", "512,"],
     "argument --hidden-sizes: '512,' is not a list of sizes such as 512,256,64,32 (or 512-256-64-32)"),
    (["train", "--hidden-sizes", "512--64"],  # as a table shows them, 512-64, but a layer lost
     "argument --hidden-sizes: '512--64' is not a list of sizes such as 512,256,64,32 (or 512-256-64-32)"),
    (["train", "--hidden-sizes", "-64"], "argument --hidden-sizes: '-64' must list positive layer sizes, e.g. "
                                         "512,256,64,32"),
    # Keras counts the epoch that missed: 0 would act as 1 does.
    (["train", "--early-stopping-patience", "0"],
     "argument --early-stopping-patience: '0' must be positive: 1 already acts on the first epoch without a lower "
     "val_loss"),
    (["tune", "--lr-patience", "0"],
     "argument --lr-patience: '0' must be positive: 1 already acts on the first epoch without a lower val_loss"),
    (["train", "--lr-patience", "-1"], "argument --lr-patience: '-1' must be positive"),
    (["train", "--batch-size", "1"], "argument --batch-size: '1' must be 2 or more: BatchNorm normalises each feature "
                                     "over the batch, and in a batch of one image every feature is 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: '0' must be 2 or more"),
])
def test_an_option_out_of_its_range_is_a_usage_error(capsys, args, refusal):
    from fmnist.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and capsys.readouterr().err.startswith(f"fmnist: error: {refusal} (see ")


def test_predict_given_one_path_says_it_was_taken_as_the_run(capsys, tmp_path):
    from fmnist.cli import main

    photo = tmp_path / "shirt.jpg"
    photo.write_bytes(b"a photo")
    with pytest.raises(SystemExit) as exited:
        main(["predict", str(photo)])  # the run left out
    assert exited.value.code == 2 and capsys.readouterr().err == (
        "fmnist: error: the following arguments are required: IMAGE; the first path given is the run, the images "
        "come after it: fmnist predict RUN IMAGE [IMAGE ...] (see 'fmnist predict --help')\n")


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(capsys):
    from fmnist.cli import main

    for args, argument in ((["report", ""], "RUN"), (["runs", "compare", "a", ""], "RUN"),
                           (["train", "--runs-dir", ""], "--runs-dir"),
                           (["predict", "run", "", "--top-k", "2"], "IMAGE"),
                           (["serve", "run", "--root-path", " "], "--root-path"),
                           (["train", "--recipe", "distilled", "--teacher", " "], "--teacher")):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2
        assert capsys.readouterr().err.startswith(f"fmnist: error: argument {argument}: empty (an unset shell")


def test_a_flag_is_taken_whole_only(capsys):
    from fmnist.cli import build_parser, main

    with pytest.raises(SystemExit) as refused:  # argparse took --lim for --limit, until another flag began so
        main(["train", "--lim", "100"])
    assert refused.value.code == 2 and "unrecognized arguments: --lim 100; did you mean --limit?" in \
        capsys.readouterr().err  # but suggested
    for argv, said in ((["train", "--epocs", "2"], "unrecognized arguments: --epocs 2; did you mean --epochs?"),
                       (["evaluate", "run", "--jsn"], "unrecognized arguments: --jsn; did you mean --json?"),
                       (["train", "--zzz"], "unrecognized arguments: --zzz (see"),
                       (["help"], "invalid choice: 'help' (choose from "),
                       (["help"], "; did you mean --help?"), (["runs", "help"], "; did you mean --help?")):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2 and said in capsys.readouterr().err, argv
    assert build_parser().parse_args(["train", "--lr", "0.01"]).learning_rate == 0.01  # a declared alias


def test_a_flag_with_its_value_before_the_command_is_told_where_it_goes(capsys):
    from fmnist.cli import main

    with pytest.raises(SystemExit):  # argparse took 100 for the command's name
        main(["--limit", "100", "train"])
    assert capsys.readouterr().err == ("fmnist: error: --limit belongs after the command's name: fmnist train --limit "
                                       "100 ... (see 'fmnist --help')\n")
    with pytest.raises(SystemExit):  # a flag no command has: not told to go after one
        main(["--bogus", "100", "train"])
    assert "invalid choice: '100'" in capsys.readouterr().err
    for given in (["--limt", "100", "train"], ["--limt", "100"]):  # mistyped as well: the flag meant, and its place
        with pytest.raises(SystemExit):
            main(given)
        assert capsys.readouterr().err == (
            "fmnist: error: unrecognized arguments: --limt; did you mean --limit? It belongs after the command's name: "
            "fmnist train --limit 100 ... (see 'fmnist --help')\n")
    said = {}
    for given in (["--limit", "100"], ["--limit=100"], ["--bogus"], ["-q", "--bogus", "-x"], ["-q", "100"]):
        with pytest.raises(SystemExit) as exited:  # no command at all: the flag named, not only the command missing
            main(given)
        assert exited.value.code == 2
        said[" ".join(given)] = capsys.readouterr().err
    assert said["--limit 100"] == ("fmnist: error: --limit belongs after the command's name: fmnist train --limit 100 "
                                   "... (see 'fmnist --help')\n")
    assert said["--limit=100"] == ("fmnist: error: --limit belongs after the command's name: fmnist train --limit ... "
                                   "(see 'fmnist --help')\n")
    for given in ("--bogus", "-q --bogus -x"):  # -q is fmnist's own, not an unknown flag
        flags = given.removeprefix("-q ")
        assert said[given] == (f"fmnist: error: unrecognized arguments: {flags}, and no command given (see 'fmnist "
                               "--help')\n")
    assert "invalid choice: '100'" in said["-q 100"]  # -q takes no value: not told to go after a command


def test_a_value_that_starts_with_a_dash_is_told_to_go_after_an_equals_sign(capsys):
    from fmnist.cli import main

    for argv, flag, value in ((["train", "--lr", "-inf"], "--lr", "-inf"),
                              (["train", "--dropout", "-0.5", "--dropout", "-inf"], "--dropout", "-inf")):
        with pytest.raises(SystemExit) as exited:  # argparse took the value for a flag
            main(argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err.startswith(
            f"fmnist: error: argument {'--learning-rate/--lr' if flag == '--lr' else flag}: expected one argument: a "
            f"value that starts with '-' goes after '=', as in {flag}={value} (see 'fmnist train --help')")
    for words in (["-q"], ["-qq"]):  # flags after a flag that wants a value are no value
        with pytest.raises(SystemExit):
            main(["train", "--dropout", *words])
        assert "goes after '='" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the command's own command
        main(["runs", "compare", "a", "b", "--output", "-x.html"])
    assert "goes after '=', as in --output=-x.html" in capsys.readouterr().err


def test_hidden_sizes_are_taken_as_the_help_gives_them_or_as_tables_show_them():
    from fmnist.cli import build_parser

    for given in ("512,256,64,32", "512-256-64-32"):  # `fmnist runs`, reports and pages write 512-256-64-32
        assert build_parser().parse_args(["train", "--hidden-sizes", given]).hidden_sizes == (512, 256, 64, 32)
