from fmnist.errors import DamagedFile, FmnistError, first_line


def test_first_line_quotes_the_first_line_or_names_the_type():
    assert first_line(ValueError("bad shape\n  at layer 3")) == "bad shape"
    assert first_line(ValueError("\n  leading blank lines\nmore")) == "leading blank lines"
    assert first_line(KeyError()) == "KeyError" and first_line(RuntimeError("   ")) == "RuntimeError"


def test_a_damaged_file_is_an_error_the_command_line_prints():
    assert issubclass(DamagedFile, FmnistError) and str(DamagedFile("x is cut short")) == "x is cut short"


def test_warn_once_says_each_thing_once_a_process(caplog):
    import logging

    from fmnist.errors import warn_once

    log = logging.getLogger("fmnist.test_warn_once")
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        for _ in range(3):  # as for each seed of a group
            warn_once(log, "/runs/teacher", "the teacher %s learned next to nothing", "/runs/teacher")
        warn_once(log, "/runs/other", "the teacher %s learned next to nothing", "/runs/other")
    assert [r.getMessage() for r in caplog.records] == ["the teacher /runs/teacher learned next to nothing",
                                                        "the teacher /runs/other learned next to nothing"]
