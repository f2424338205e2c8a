"""What every command shares: one-line errors, exit codes, the console."""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

#: exit codes: 0 all done, 1 some inputs failed, 2 usage / configuration error
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

console = Console(stderr=True, highlight=False)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user (printed as one line, no traceback)."""
    from ..hub import WeightsUnavailable
    from ..imageio import SinsrIOError
    from ..models.checkpoints import CheckpointError

    return (CheckpointError, WeightsUnavailable, SinsrIOError, ValueError, FileNotFoundError, PermissionError)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:500]


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Print ``error: message`` on stderr and return the Exit to raise."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn user-facing exceptions into a one-line error and exit code 2.

    ``--verbose`` (a ``verbose`` keyword of the command) prints the traceback as well.
    Anything unexpected still prints one line, plus a hint to rerun with ``--verbose``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose", False))
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
            raise fail(one_line(e)) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: never a bare traceback
            if verbose:
                traceback.print_exc(file=sys.stderr)
            raise fail(f"{type(e).__name__}: {one_line(e)} (rerun with --verbose for details)", 1) from None

    return wrapper  # type: ignore[return-value]
