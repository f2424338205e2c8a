"""What every command shares: one-line errors, exit codes, the console, ``--quiet``, and the
command class that makes help and usage errors read as users of other CLIs expect."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from ..errors import one_line
from ..text import printable

F = TypeVar("F", bound=Callable[..., Any])

#: exit codes: 0 all done, 1 some inputs failed, 2 usage / configuration error
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

console = Console(stderr=True, highlight=False)

#: what ``-q`` means in every command
QUIET_HELP = "Errors only: no progress, notes or summary (the exit code tells the rest)."


def parse_tile(value: str) -> int | None:
    """``--tile``: ``auto`` -> None (planned per image once the model is loaded), else an int
    in the range ``plan.Tiling`` takes (SettingError otherwise)."""
    from ..plan import Tiling

    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        tile = int(text)
    except ValueError:
        raise ValueError(f"--tile must be a number of LR pixels, 0 (off) or 'auto', got {value!r}") from None
    return Tiling(tile=tile).tile


def quiet_option() -> Any:
    """The ``-q/--quiet`` option, the same in every command."""
    return typer.Option(False, "-q", "--quiet", help=QUIET_HELP)


class SinsrCommand(TyperCommand):
    """A Typer command whose help and usage errors read like a conventional CLI's.

    * Flags show no value placeholder (``--quiet``, not ``--quiet <bool>``) and arguments no
      Python type (``INPUT...``, not ``<list[str]>``).
    * Long options may be spelled with underscores (``--tile_pad`` = ``--tile-pad``), as in
      Real-ESRGAN's and BasicSR's scripts.
    * An unknown option names the one nearest real option (``--tiel``: did you mean ``--tile``?).
    * A usage error (an unknown option, a value of the wrong type, a missing argument) is one
      ``error:`` line and exit 2, like every other error, not Typer's boxed panel; with the
      command's ``--json`` flag, also ``{"error", "exit_code"}`` on stdout (:func:`echo_json_error`).
    * Help paragraphs reflow to the terminal's width (Typer's rich mode keeps the docstring's
      line breaks, which wrap raggedly on an 80-column terminal).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                p.metavar = ""  # Typer >= 0.16 shows a flag's type as its value
            elif getattr(p, "param_type_name", "") == "argument" and hasattr(p, "display_type_rich"):
                p.display_type_rich = lambda ctx: None  # the metavar says it all
        return params

    def long_options(self, ctx: Any) -> list[str]:
        """Every ``--name`` this command accepts (both halves of ``--x/--no-x``)."""
        names: list[str] = []
        for p in self.get_params(ctx):
            for opt in [*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())]:
                if opt.startswith("--"):
                    names.append(opt)
        return names

    def _asks_for_json(self, ctx: Any, args: list[str]) -> bool:
        """Whether ``args`` turn on the command's ``json_out`` flag (the keyword
        :func:`handle_errors` reads), before any ``--``."""
        given = _options_of(args)
        return any(p.name == "json_out" and any(o in given for o in p.opts) for p in self.get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        known = set(self.long_options(ctx))
        args = _dashed(args, known)
        wants_json = self._asks_for_json(ctx, args)  # now: click consumes ``args`` as it parses
        try:
            return super().parse_args(ctx, args)
        except Exception as e:  # click's or Typer's vendored NoSuchOption, by name
            if type(e).__name__ == "NoSuchOption":
                _suggest(e, sorted(known))
            try:
                _usage_error_in_one_line(e)
            except typer.Exit as exit_:  # --scale abc with --json: the script reading stdout gets JSON
                if wants_json:
                    echo_json_error(exit_)
                raise
            raise


def reflow(text: str) -> str:
    """Each blank-line-separated paragraph of ``text`` on one line (the terminal wraps it)."""
    return "\n\n".join(" ".join(par.split()) for par in re.split(r"\n\s*\n", text.strip()))


def _usage_error_in_one_line(e: BaseException) -> None:
    """A click usage error (exit code 2) as one ``error:`` line and exit 2; anything else returns."""
    if getattr(e, "exit_code", None) == EXIT_USAGE and hasattr(e, "format_message"):
        raise fail(one_line(e.format_message()), EXIT_USAGE) from None  # no usage box


@contextlib.contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        _usage_error_in_one_line(e)
        raise


class SinsrGroup(TyperGroup):
    """The ``sinsr`` group: an unknown command or root option is one ``error:`` line, as in
    :class:`SinsrCommand`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        with _usage_errors_in_one_line():
            return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        with _usage_errors_in_one_line():
            return super().resolve_command(ctx, args)


def _dashed(args: list[str], known: set[str]) -> list[str]:
    """``--tile_pad 10`` -> ``--tile-pad 10`` where only the dashed spelling is an option."""
    out: list[str] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return out + args[i:]
        if tok.startswith("--") and "_" in tok:
            name, eq, value = tok.partition("=")
            dashed = name.replace("_", "-")
            if name not in known and dashed in known:
                tok = dashed + eq + value
        out.append(tok)
    return out


def _options_of(args: list[str]) -> list[str]:
    """The arguments before a ``--`` (after it, ``--json`` is a file name)."""
    return args[: args.index("--")] if "--" in args else args


def _suggest(err: Any, known: list[str]) -> None:
    """Replace click's list of possibilities by the single nearest option, if any."""
    name = str(getattr(err, "option_name", "") or "")
    if not name.startswith("--"):
        return
    best = difflib.get_close_matches(name.split("=", 1)[0].replace("_", "-"), known, n=1, cutoff=0.6)
    err.possibilities = None
    err.message = f"No such option: {name}" + (f". Did you mean {best[0]}?" if best else " (see --help)")


#: (module, class) of our exceptions whose message is meant for the user
_USER_ERRORS = (("zoo", "WeightsUnavailable"), ("imageio", "SinsrIOError"), ("models.checkpoints", "CheckpointError"))


def _ours(names: Sequence[tuple[str, str]]) -> tuple[type[BaseException], ...]:
    """Those classes whose module is loaded. One that is not loaded cannot have been raised, and
    importing it here would cost an error message the seconds torch takes to import."""
    pkg = __name__.rsplit(".", 2)[0]
    mods = [sys.modules.get(f"{pkg}.{m}") for m, _ in names]
    return tuple(getattr(mod, cls) for mod, (_, cls) in zip(mods, names) if mod is not None)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user (printed as one line, no traceback)."""
    return (*_ours(_USER_ERRORS), ValueError, FileNotFoundError, PermissionError)


def run_failures() -> tuple[type[BaseException], ...]:
    """User-facing exceptions that mean the run failed rather than the command was wrong (exit 1)."""
    return _ours((("zoo", "WeightsMissing"),))


_USER_HF_VERBOSITY = os.environ.get("HF_HUB_VERBOSITY")


def library_logging(verbose: bool) -> None:
    """huggingface_hub's warnings (retries, back-off) reach the terminal only with --verbose."""
    if _USER_HF_VERBOSITY:
        return  # the user's own choice
    level = "info" if verbose else "error"
    os.environ["HF_HUB_VERBOSITY"] = level  # read when huggingface_hub is first imported
    if "huggingface_hub" in sys.modules:
        logging.getLogger("huggingface_hub").setLevel(logging.INFO if verbose else logging.ERROR)


#: library settings whose flag is not ``--`` + the name with dashes
SETTING_FLAGS = {"tile_batch": "--batch", "ema_rate": "--ema"}


def flag_for(setting: str) -> str:
    """The flag that sets a library setting (``tile_overlap`` -> ``--tile-overlap``)."""
    return SETTING_FLAGS.get(setting, "--" + setting.replace("_", "-"))


def flag_message(err: BaseException) -> str:
    """The library's message with the setting's flag in place of its name
    (``steps must be >= 1`` -> ``--steps must be >= 1``), or before it; each setting in the
    error's ``mentions`` respelled as its flag where it stands as a word
    (``unknown amp 'fp8'`` -> ``unknown --amp 'fp8'``)."""
    text = one_line(err, 500)
    mentions = tuple(m for m in getattr(err, "mentions", ()) or () if isinstance(m, str) and m)
    for name in mentions:  # a whole word: not inside a path, a file name or a longer name
        text = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", flag_for(name), text)
    setting = getattr(err, "setting", "")
    if not isinstance(setting, str) or not setting or setting in mentions:
        return text
    flag = flag_for(setting)
    if text.startswith(setting) and text[len(setting) : len(setting) + 1] in (" ", ":"):
        return flag + text[len(setting) :]
    return f"{flag}: {text}"


def shown(value: object) -> str:
    """``value`` ready for a Rich markup string: a path's ``[red]`` kept as text, a newline or
    escape sequence in a name shown as an escape (never sent to the terminal raw)."""
    return escape(printable(str(value)))


def echo_path(path: object, prefix: str = "") -> None:
    """A path on stdout exactly as the file system has it, as ``find`` prints it (for scripts:
    ``typer.echo`` would drop an escape sequence from the name when piped, and a name that is
    not UTF-8 would not encode)."""
    sys.stdout.flush()
    out = getattr(sys.stdout, "buffer", None)
    data = prefix.encode() + os.fsencode(os.fspath(path)) + b"\n"  # type: ignore[arg-type]
    if out is None:  # a text-only stream
        sys.stdout.write(data.decode("utf-8", "backslashreplace"))
    else:
        out.write(data)
        out.flush()


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Print ``error: message`` on stderr (plain text: a path's ``[1]`` is not markup) and
    return the Exit to raise; it keeps the message for ``--json`` (see :func:`handle_errors`)."""
    console.print(Text.assemble(("error:", "red"), " ", printable(message)), soft_wrap=True)
    exit_ = typer.Exit(code)
    exit_.message = message  # type: ignore[attr-defined]
    return exit_


def echo_json_error(exit_: typer.Exit) -> None:
    """``{"error", "exit_code"}`` on stdout for an Exit made by :func:`fail` (one that carries
    its message): what ``--json`` prints for an error before the run, whoever found it (the
    command, or click while parsing the arguments)."""
    message = getattr(exit_, "message", None)
    if message is not None:
        typer.echo(json.dumps({"error": message, "exit_code": exit_.exit_code}, indent=2))


def handle_errors(fn: F) -> F:
    """Turn user-facing exceptions into a one-line error and exit code 2 (1 for
    :func:`run_failures`, such as weights that cannot be had).

    ``--verbose`` (a ``verbose`` keyword of the command) prints the traceback as well, and lets
    library warnings through (:func:`library_logging`). With ``--json`` (a ``json_out`` keyword)
    an error is also ``{"error", "exit_code"}`` on stdout, so a script reading it always gets JSON.
    Anything unexpected still prints one line, plus a hint to rerun with ``--verbose``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return one_line_errors(*args, **kwargs)
        except typer.Exit as e:
            if kwargs.get("json_out"):  # --json: the error as JSON on stdout too
                echo_json_error(e)
            raise

    def one_line_errors(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose", False))
        library_logging(verbose)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130)
        except user_errors() as e:
            if verbose:
                traceback.print_exc(file=sys.stderr)
            text = flag_message(e)
            raise fail(text, EXIT_PARTIAL if isinstance(e, run_failures()) else EXIT_USAGE) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: never a bare traceback
            if verbose:
                traceback.print_exc(file=sys.stderr)
            raise fail(f"{type(e).__name__}: {flag_message(e)} (rerun with --verbose for details)", 1) from None

    return wrapper  # type: ignore[return-value]
