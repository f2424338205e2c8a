"""What every command shares: one-line errors, exit codes, the console."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

#: exit codes: 0 all done, 1 some inputs failed, 2 usage / configuration error
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

console = Console(stderr=True, highlight=False)


#: (module, class) of our exceptions whose message is meant for the user
_USER_ERRORS = (("hub", "WeightsUnavailable"), ("imageio", "SinsrIOError"), ("models.checkpoints", "CheckpointError"))


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
    return _ours((("hub", "WeightsMissing"),))


_USER_HF_VERBOSITY = os.environ.get("HF_HUB_VERBOSITY")


def library_logging(verbose: bool) -> None:
    """huggingface_hub's warnings (retries, back-off) reach the terminal only with --verbose."""
    if _USER_HF_VERBOSITY:
        return  # the user's own choice
    level = "info" if verbose else "error"
    os.environ["HF_HUB_VERBOSITY"] = level  # read when huggingface_hub is first imported
    if "huggingface_hub" in sys.modules:
        logging.getLogger("huggingface_hub").setLevel(logging.INFO if verbose else logging.ERROR)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:500]


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Print ``error: message`` on stderr and return the Exit to raise."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn user-facing exceptions into a one-line error and exit code 2 (1 for
    :func:`run_failures`, such as weights that cannot be had).

    ``--verbose`` (a ``verbose`` keyword of the command) prints the traceback as well, and lets
    library warnings through (:func:`library_logging`).
    Anything unexpected still prints one line, plus a hint to rerun with ``--verbose``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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
            raise fail(one_line(e), EXIT_PARTIAL if isinstance(e, run_failures()) else EXIT_USAGE) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: never a bare traceback
            if verbose:
                traceback.print_exc(file=sys.stderr)
            raise fail(f"{type(e).__name__}: {one_line(e)} (rerun with --verbose for details)", 1) from None

    return wrapper  # type: ignore[return-value]
