from fmnist.errors import DamagedFile, FmnistError, first_line


def test_first_line_quotes_the_first_line_or_names_the_type():
    assert first_line(ValueError("bad shape\n  at layer 3")) == "bad shape"
    assert first_line(ValueError("\n  leading blank lines\nmore")) == "leading blank lines"
    assert first_line(KeyError()) == "KeyError" and first_line(RuntimeError("   ")) == "RuntimeError"


def test_a_damaged_file_is_an_error_the_command_line_prints():
    assert issubclass(DamagedFile, FmnistError) and str(DamagedFile("x is cut short")) == "x is cut short"
