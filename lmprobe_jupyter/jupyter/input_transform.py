"""An IPython input transformer that lets the project's magics take ordinary sentences.

Two spellings IPython reads its own way before a magic ever sees them:

- a line magic ending in ``?`` (``%probe_tokens dog_probe Who's a good boy?``) is taken
  as a help request ("Object `boy` not found");
- a cell magic with an empty body (``%%probe_fit dog`` alone) is refused with "Did you
  mean the line magic?", which leads to a second error.

:func:`make_transformer` returns a cleanup transformer (it runs before IPython's own
magic and help parsing) that rewrites just these cases, for just the named magics, into
explicit ``run_line_magic`` / ``run_cell_magic`` calls; the magic itself then answers
(the question is scored, the empty body gets a message saying what it should hold).
``%probe_fit?`` with nothing else on the line still shows the help.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["make_transformer"]

_LINE = re.compile(r"^(?P<indent>\s*)%(?P<name>\w+)(?P<rest>.*?)\s*$", re.DOTALL)
_CELL = re.compile(r"^\s*%%(?P<name>\w+)(?P<rest>.*?)\s*$", re.DOTALL)


def _has_arguments(rest: str) -> bool:
    """True when ``rest`` holds more than the help marks: ``%probe_fit ?`` is still help."""
    return bool(rest.strip().rstrip("?").strip())


def make_transformer(names: Iterable[str]) -> Callable[[list[str]], list[str]]:
    """A cleanup transformer for the line/cell magics ``names`` (e.g. ``"probe_tokens"``).

    Parameters
    ----------
    names : iterable of str
        Magic names without the ``%``.

    Returns
    -------
    callable
        ``transform(lines) -> lines``, for ``shell.input_transformers_cleanup``.
    """
    known = frozenset(names)

    def transform(lines: list[str]) -> list[str]:
        if not lines:
            return lines
        cell = _CELL.match(lines[0])
        if cell and cell["name"] in known:
            if cell["rest"].strip().startswith("?") or cell["rest"][:1] not in ("", " ", "\t"):
                return lines  # %%probe_fit? is help; %%probe_fitx is another magic
            if all(not line.strip() for line in lines[1:]):
                # a body of one newline: the magic runs and says what the body should hold
                return [
                    f"get_ipython().run_cell_magic({cell['name']!r}, "
                    f"{cell['rest'].strip()!r}, '\\n')\n"
                ]
            return lines  # a cell magic's body is never read as Python: nothing to fix
        out = []
        for line in lines:
            m = _LINE.match(line)
            if (
                m
                and m["name"] in known
                and not line.lstrip().startswith("%%")
                and m["rest"].rstrip().endswith("?")
                and m["rest"][:1].isspace()
                and _has_arguments(m["rest"])
            ):
                ending = "\n" if line.endswith("\n") else ""
                line = (
                    f"{m['indent']}get_ipython().run_line_magic({m['name']!r}, "
                    f"{m['rest'].strip()!r}){ending}"
                )
            out.append(line)
        return out

    # marks it so unload finds exactly this transformer again
    transform.lmprobe_jupyter = True  # type: ignore[attr-defined]
    return transform
