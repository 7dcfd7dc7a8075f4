"""How fmnist reads its command line: an argparse parser whose errors are one line with a hint of what was
meant, and the types of value its flags take, each refused in words."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from fmnist import defaults
from fmnist.errors import FmnistError, one_line

# Commands a user may look for under another name (given as the command).
UNKNOWN_WORD_HINTS = {
    "seeds": "'fmnist train --seeds N' trains one run a seed, in a group whose summary gives their mean and spread",
    "explain": "'fmnist predict RUN IMAGE --show seen.png' draws what the model looked at in your images, and every "
               "run's report draws it for test images",
}
# Flags a user may look for under another name: the hint for a command that trains (takes --recipe), and for one
# that takes a run.
UNKNOWN_FLAG_HINTS = {"--model": ("the ConvNet is a recipe: --recipe cnn (--recipe best for the best dense network)",
                                  "a run holds its model: give the run, its folder or its name, as the first argument "
                                  "after the command's name")}
# What tune searches, and the recipes it does not train, given to it as flags.
TRAIN_ONLY_FLAGS = {"--hidden-sizes", "--dropout", "--learning-rate", "--lr", "--batch-size", "--lr-factor", "--recipe",
                    "--teacher"}
TUNE_SEARCHES_HINT = ("tune trains the spec's dense network alone, searching its hidden sizes, dropout, learning rate, "
                      "batch size and plateau factor itself: 'fmnist train' takes these, and --recipe and --teacher, "
                      "as flags")


class Parser(argparse.ArgumentParser):
    """A malformed command line gets one line, like every other error (argparse would print the usage as well); a
    flag is taken whole only (argparse would take --lim for --limit, until a new flag made it ambiguous)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        said = (self._misplaced_value(message) or self._dashed_value(message) or self._flag_without_command(message)
                or f"{message}{_hint(message)}")
        self.exit(2, f"fmnist: error: {one_line(said)} (see '{self.prog} --help')\n")

    def _misplaced_value(self, message: str) -> str | None:
        """For `fmnist --limit 100 train`: argparse takes 100 for the command's name; the flag belongs after it."""
        invalid = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        given = getattr(self, "given", [])
        if not invalid or invalid[1] not in given or given.index(invalid[1]) == 0:
            return None
        at = given.index(invalid[1])
        if given[at - 1] in self._option_string_actions:  # -q, which takes no value, goes before the command too
            return None
        commands = next(a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction))
        flag = given[at - 1]
        command = next((word for word in given[at + 1:] if word in commands), None)
        if command is None:  # none given (`fmnist --limit 100`): the first that takes the flag, or one like it
            command = next((name for name, parser in commands.items()
                            if flag in parser._option_string_actions or self._flag_hint(flag, parser)), None)
        if command is None:
            return None
        if flag not in commands[command]._option_string_actions:  # mistyped too (`fmnist --epocs 3 train`)
            meant = self._flag_hint(flag, commands[command])
            if meant is None or not meant.startswith("did you mean "):
                return None
            close = meant.removeprefix("did you mean ").rstrip("?")
            return (f"unrecognized arguments: {flag}; did you mean {close}? It belongs after the command's name: "
                    f"fmnist {command} {close} {invalid[1]} ...")
        return f"{flag} belongs after the command's name: fmnist {command} {flag} {invalid[1]} ..."

    def _dashed_value(self, message: str) -> str | None:
        """For `--lr -inf`: argparse takes a value that starts with '-' for a flag, unless it reads as a negative number
        (-1e-3 does from Python 3.14 on)."""
        missing = re.match(r"argument (\S+): expected one argument$", message)
        given = getattr(self, "given", [])
        if not missing:
            return None
        flags = missing[1].split("/")
        for word, value in zip(given, given[1:]):
            taken = self._negative_number_matcher.match(value) or value[:2] in self._option_string_actions
            if word in flags and value.startswith("-") and not value.startswith("--") and not taken:
                return f"{message}: a value that starts with '-' goes after '=', as in {word}={value}"
        return None

    def _flag_without_command(self, message: str) -> str | None:
        """For `fmnist --bogus` or `fmnist --limit 100`: argparse says that the command is missing, not which flag it
        did not know."""
        if not message.startswith("the following arguments are required: COMMAND"):
            return None
        unknown = [word.split("=")[0] for word in getattr(self, "given", [])
                   if word.startswith("-") and len(word) > 1 and not self._negative_number_matcher.match(word)
                   and word.split("=")[0] not in self._option_string_actions]
        if not unknown:
            return None
        commands = next(a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction))
        owner = next((name for name, parser in commands.items() if unknown[0] in parser._option_string_actions), None)
        if owner is not None:
            return f"{unknown[0]} belongs after the command's name: fmnist {owner} {unknown[0]} ..."
        return f"unrecognized arguments: {' '.join(unknown)}, and no command given"

    def _share_given(self, parser: argparse.ArgumentParser) -> None:
        """A command's own parser (`runs compare`'s too) reports its errors, and may need the words given."""
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    command.given = self.given
                    self._share_given(command)

    def parse_args(self, args: list[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        self.given = list(sys.argv[1:] if args is None else args)
        self._share_given(self)
        parsed, unknown = self.parse_known_args(args, namespace)
        command = getattr(parsed, "command_parser", self)
        unknown = self._more_of_a_list(command, parsed, unknown)
        if unknown:  # argparse would report them from the top; the command's own --help lists what it takes
            misplaced = [arg for arg in unknown if arg.split("=")[0] in command._option_string_actions]
            if misplaced:  # given before the command's name, where only -q and --debug go
                command.error(f"{' '.join(misplaced)} belongs after the command's name: {command.prog} "
                              f"{' '.join(misplaced)} ...")
            hints = "".join(f"; {hint}" for hint in dict.fromkeys(self._flag_hint(arg.split("=")[0], command)
                                                                   for arg in unknown) if hint)
            command.error(f"unrecognized arguments: {' '.join(unknown)}{hints}")
        return parsed

    @staticmethod
    def _flag_hint(flag: str, command: argparse.ArgumentParser) -> str | None:
        if flag in TRAIN_ONLY_FLAGS and "--train-best" in command._option_string_actions:
            return TUNE_SEARCHES_HINT
        if flag not in UNKNOWN_FLAG_HINTS:  # a mistyped or shortened flag: the command's nearest
            flags = [name for name in command._option_string_actions if name.startswith("--")]
            close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75) if flag.startswith("--") else []
            return f"did you mean {close[0]}?" if close else None
        trains, runs = UNKNOWN_FLAG_HINTS[flag]
        if "--recipe" in command._option_string_actions:
            return trains
        takes_a_run = any(not a.option_strings and a.metavar == "RUN" and a.nargs is None for a in command._actions)
        return runs if takes_a_run else None

    @staticmethod
    def _more_of_a_list(command: argparse.ArgumentParser, parsed: argparse.Namespace, unknown: list[str]) -> list[str]:
        """Files given after an option (`predict RUN a.png --show s.png b.png`) join the command's list of them:
        argparse takes only the first stretch of a nargs="+" positional. Anything else stays unknown."""
        listed = next((a for a in command._actions if a.nargs == "+" and not a.option_strings), None)
        if listed is None or any(arg.startswith("-") and arg != defaults.STDIN for arg in unknown):
            return unknown
        for arg in unknown:
            try:
                getattr(parsed, listed.dest).append(listed.type(arg))
            except argparse.ArgumentTypeError as exc:
                command.error(f"argument {listed.metavar}: {exc}")
        return []


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as laid out; a command that may be left out (`fmnist runs [compare ...]`) bracketed in the usage,
    as argparse brackets an optional flag (it would show `compare ...` as if it were required)."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        formatted = super()._format_args(action, default_metavar)
        return f"[{formatted}]" if action.nargs == argparse.PARSER and not action.required else formatted


def _hint(message: str) -> str:
    """For a word argparse did not know among its choices: what it may have meant; for predict given one path, that
    it was taken as the run."""
    if message == "the following arguments are required: IMAGE":  # `fmnist predict photo.jpg`, the run left out
        return "; the first path given is the run, the images come after it: fmnist predict RUN IMAGE [IMAGE ...]"
    invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not invalid:
        return ""
    word, choices = invalid[1], [choice.strip(" '") for choice in invalid[2].split(",")]
    if message.startswith("argument COMMAND:") and word in UNKNOWN_WORD_HINTS:
        return f"; {UNKNOWN_WORD_HINTS[word]}"
    if word == "help" and message.startswith(("argument COMMAND:", "argument compare:")):  # `fmnist help`
        return "; did you mean --help?"
    lowered = {choice.lower(): choice for choice in choices}  # "CNN" is as near to "cnn" as can be
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    if close:
        return f"; did you mean '{lowered[close[0]]}'?"
    if message.startswith("argument compare:"):  # `fmnist runs STUDY`, `fmnist runs RUN`: a folder or a run named
        return ("; 'fmnist runs' takes no name: 'fmnist runs --runs-dir FOLDER' lists the runs in a folder (a "
                "study's, say), 'fmnist runs compare RUN RUN' compares runs")
    return ""


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive, finite number of seconds")
    return number


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``; with no ``high``, ``low`` or more."""
    def whole_number(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if number < low or (high is not None and number > high):
            bounds = f"from {low} to {high}" if high is not None else "positive" if low == 1 else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value!r} must be {bounds}")
        return number

    return whole_number


positive_int = int_between(1)


def patience(value: str) -> int:
    """An argparse type: a plateau callback's patience, 1 or more; 0 is told why it adds nothing."""
    with contextlib.suppress(ValueError):  # not a number: positive_int says so
        if int(value) == 0:  # Keras counts the epoch that missed: patience 1 already acts on the first one, as 0 would
            raise argparse.ArgumentTypeError(f"{value!r} must be positive: 1 already acts on the first epoch "
                                             "without a lower val_loss")
    return positive_int(value)


def batch_size(value: str) -> int:
    """An argparse type: images per step, 2 or more; 1 is told why it would learn nothing."""
    from fmnist.settings import ONE_IMAGE_BATCH

    with contextlib.suppress(ValueError):  # not a number: int_between says so
        if int(value) == 1:
            raise argparse.ArgumentTypeError(f"{value!r} must be 2 or more: {ONE_IMAGE_BATCH}")
    return int_between(2)(value)


def seed_count(value: str) -> int:
    """An argparse type: a number of seeds for a group, checked as ``train_seeds`` checks it."""
    from fmnist.seeds import check_count  # imported only when --seeds is given: --help stays light

    number = positive_int(value)
    try:
        check_count(number)
    except FmnistError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return number


def probability(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} must be from 0 to 1")
    return number


def nonempty(value: str) -> str:
    # An unset shell variable ("--study $NAME") must not quietly mean the default, nor Path("") the current folder.
    if not value.strip():
        raise argparse.ArgumentTypeError("empty (an unset shell variable?)")
    return value


def nonempty_path(value: str) -> Path:
    return Path(nonempty(value))


def input_file(value: str) -> Path | str:
    """An input file, or standard input for '-' alone (a Path would make './-', a file of that name, read the same)."""
    return value if value == defaults.STDIN else nonempty_path(value)


def layer_sizes(value: str) -> tuple[int, ...]:
    """Sizes as the flag's help gives them, 512,256,64,32, or as tables show them, 512-256-64-32 (copied from one)."""
    if value.strip().startswith("-"):  # a negative size, not a separator
        raise argparse.ArgumentTypeError(f"{value!r} must list positive layer sizes, e.g. 512,256,64,32")
    try:
        sizes = tuple(int(part) for part in re.split("[,-]", value))  # int() refuses an empty part: a typo's lost layer
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a list of sizes such as 512,256,64,32 (or 512-256-64-32)") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must list positive layer sizes, e.g. 512,256,64,32")
    return sizes
