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
            lines.append(f"{where}: {format_path(path)}: {msg}")
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems:\n" + "\n".join("  " + x for x in lines)
