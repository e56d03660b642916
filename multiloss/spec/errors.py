"""The one error type users see for a bad spec or config."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def format_path(path: Sequence[str | int]) -> str:
    """Render a path tuple as a dotted YAML path: ``outputs.bin_out.loss.0``."""
    return ".".join(str(p) for p in path) or "<root>"


class SpecError(ValueError):
    """A spec or config is invalid.

    ``problems`` holds one ``(path, line, message)`` triple per problem, so
    tools can show every problem at once rather than the first only.
    """

    def __init__(
        self,
        problems: Iterable[tuple[Sequence[str | int], int | None, str]],
        source: str = "<spec>",
    ):
        self.problems = [(tuple(p), line, msg) for p, line, msg in problems]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for path, line, msg in self.problems:
            where = f"{self.source}:{line}" if line else self.source
            lines.append(f"{where}: {format_path(path)}: {msg}" if path else f"{where}: {msg}")
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems:\n" + "\n".join("  " + x for x in lines)


class RunError(RuntimeError):
    """A run cannot go on (a folder it may not touch, a disk that is full, a NaN).

    The message says what happened and what to do; ``exit_status`` is the
    command's exit status.
    """

    exit_status = 1


class NonFiniteError(RunError):
    """Training produced a NaN or infinite term, total or gradient."""

    exit_status = 3


def run_guarded(call, resume_hint: str = "") -> int:
    """Run a command; report user errors as one message (no traceback) and an exit status.

    ``SpecError``/``LookupError``/missing files: 1; :class:`RunError`: its
    ``exit_status``; an ``OSError`` (unwritable or full disk): 1; a closed pipe: 141, quietly; Ctrl-C: 130.
    """
    import sys

    try:
        status = call()
        return status if isinstance(status, int) else 0
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except FileNotFoundError as exc:
        print(f"error: no such file or folder: {exc.filename}" if exc.filename else f"error: {exc}", file=sys.stderr)
        return 1
    except LookupError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:         # the reader went away (`multiloss schema | head`): end quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 141                  # 128 + SIGPIPE, as other commands in a pipe
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted{'; ' + resume_hint if resume_hint else ''}", file=sys.stderr)
        return 130
