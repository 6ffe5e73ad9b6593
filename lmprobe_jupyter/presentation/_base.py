"""Shared pieces of the renderers: colours, number formats, element ids, CSS, token spans.

A leading-underscore module shared by the renderers of this package (and nothing else):
the public names are re-exported by :mod:`lmprobe_jupyter.presentation`.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import math
import pathlib
import re
from collections.abc import Iterable

#: Folder of the CSS (renderers and widgets) and of the widgets' JavaScript.
STATIC_DIR = pathlib.Path(__file__).parent / "static"

# Diverging scale (ColorBrewer RdBu end points): low scores blue, the midpoint white,
# high scores red. The JavaScript side never recomputes colours: it mounts this HTML.
NEG_COLOR = "#2166ac"
MID_COLOR = "#ffffff"
POS_COLOR = "#b2182b"
NAN_COLOR = "#e0e0e0"
TRAIN_COLOR = "#1f77b4"
TEST_COLOR = "#d62728"
BEST_COLOR = "#1a9850"
BASELINE_COLOR = "#8c9db5"
PROBE_COLOR = POS_COLOR
ALARM_COLOR = POS_COLOR
DARK_TEXT = "#000000"
LIGHT_TEXT = "#ffffff"
#: Fallback text colours of SVG labels (the CSS classes ``lmpj-fg``/``lmpj-fg2`` follow
#: the JupyterLab theme instead where the ``<style>`` survives).
FG = "#222222"
FG2 = "#595959"
FONT = "font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif"

_uid_counter = itertools.count()


def new_uid(prefix: str = "lmpj") -> str:
    """Return a fresh element id ``f"{prefix}-{n}"`` from the process-wide counter."""
    return f"{prefix}-{next(_uid_counter)}"


def reset_uids(start: int = 0) -> None:
    """Restart the id counter (tests use this to get reproducible output)."""
    global _uid_counter
    _uid_counter = itertools.count(start)


@functools.cache
def css(*names: str) -> str:
    """The rules of ``static/<name>.css`` for each name, concatenated (read once).

    Comments are dropped and whitespace squeezed: the text is inlined into every output.
    """
    text = "".join((STATIC_DIR / f"{name}.css").read_text(encoding="utf-8") for name in names)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s*([{};:,>])\s*", r"\1", text).strip()


# ---------------------------------------------------------------- formatting


def esc(value: object) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def is_missing(value: object) -> bool:
    """True for None, NaN and anything that is not a number."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def fmt(value: object, digits: int = 3) -> str:
    """Format a number for display; missing values read ``n/a``, ints stay ints."""
    if is_missing(value):
        return "n/a"
    v = float(value)  # type: ignore[arg-type]
    if v == int(v) and abs(v) < 1e15 and isinstance(value, int):
        return str(int(v))
    return f"{v:.{digits}f}"


def num(x: float) -> str:
    """Format an SVG coordinate: one decimal, no ``-0.0``."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def format_bytes(n: float | None) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000); None reads ``"none"``."""
    if n is None:
        return "none"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def format_seconds(s: float | None) -> str:
    """``0.004`` -> ``"4.0ms"``, ``1.5`` -> ``"1.50s"``; None reads ``"n/a"``."""
    if s is None:
        return "n/a"
    if s < 0.01:
        return f"{s * 1000:.1f}ms"
    return f"{s:.2f}s"


def plural(n: int, word: str) -> str:
    """``plural(1, "token")`` -> ``"1 token"``, ``plural(3, "token")`` -> ``"3 tokens"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------- colours


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _rgb_to_hex(rgb: Iterable[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def _mix(a: str, b: str, t: float) -> str:
    ra, rb = _hex_to_rgb(a), _hex_to_rgb(b)
    return _rgb_to_hex(_round_half_up(x + (y - x) * t) for x, y in zip(ra, rb))


def score_color(score: float | None, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """Map a score to a hex colour on the blue-white-red diverging scale.

    The midpoint ``(vmin + vmax) / 2`` is white, ``vmin`` (and below) the full blue
    ``#2166ac``, ``vmax`` (and above) the full red ``#b2182b``. Missing scores (None,
    NaN) are light grey.

    Parameters
    ----------
    score : float or None
        The score, e.g. a probability of the positive class.
    vmin, vmax : float
        The ends of the scale; ``vmin < vmax``.

    Returns
    -------
    str
        ``"#rrggbb"``.
    """
    if vmax <= vmin:
        raise ValueError(f"vmax={vmax!r} must be greater than vmin={vmin!r}")
    if is_missing(score):
        return NAN_COLOR
    t = (float(score) - vmin) / (vmax - vmin)  # type: ignore[arg-type]
    t = min(1.0, max(0.0, t))
    if t >= 0.5:
        return _mix(MID_COLOR, POS_COLOR, (t - 0.5) * 2.0)
    return _mix(MID_COLOR, NEG_COLOR, (0.5 - t) * 2.0)


def relative_luminance(color: str) -> float:
    """WCAG relative luminance of ``"#rrggbb"`` (0 black .. 1 white)."""

    def channel(c: int) -> float:
        s = c / 255.0
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _hex_to_rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG contrast ratio of two ``"#rrggbb"`` colours (1 .. 21)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def text_color(background: str) -> str:
    """Return the text colour (near-black or white) with more contrast on ``background``.

    The switch sits where both contrasts are equal, so either choice keeps WCAG's
    4.5:1 on every colour of the score scale (the page theme never matters: a token
    carries its own background).
    """
    dark = contrast_ratio(background, DARK_TEXT)
    light = contrast_ratio(background, LIGHT_TEXT)
    return LIGHT_TEXT if light > dark else DARK_TEXT


# ---------------------------------------------------------------- shared markup


def style_block(*sheets: str) -> str:
    """``<style>`` with ``base.css`` and the named extra sheets."""
    return f"<style>{css('base', *sheets)}</style>"


def root(kind: str, uid: str, body: str, extra_attrs: str = "", sheets: tuple = ()) -> str:
    """The outer ``<div class="lmpj lmpj-{kind}">`` of every renderer, with its CSS."""
    attrs = f' id="{esc(uid)}" class="lmpj lmpj-{kind}"'
    if extra_attrs:
        attrs += " " + extra_attrs
    return f'<div{attrs} style="{FONT};font-size:13px">{style_block(*sheets)}{body}</div>'


def visible_token(token: str) -> str:
    """Token text as displayed: newlines become a visible ``↵`` then a real line break."""
    return token.replace("\r\n", "\n").replace("\n", "\u21b5\n")


def token_span(
    token: str,
    score: float | None,
    threshold: float,
    vmin: float = 0.0,
    vmax: float = 1.0,
    flagged: bool = False,
) -> str:
    """One coloured ``<span class="lmpj-tok">``: background from the score, readable text.

    Tokens strictly over ``threshold`` get ``lmpj-over``; ``flagged`` adds ``lmpj-flag``
    (the monitor's first flagged token). Missing scores are grey and never over.
    """
    missing = is_missing(score)
    bg = score_color(None if missing else float(score), vmin, vmax)  # type: ignore[arg-type]
    fg = text_color(bg)
    over = not missing and float(score) > threshold  # type: ignore[arg-type]
    cls = "lmpj-tok" + (" lmpj-over" if over else "") + (" lmpj-flag" if flagged else "")
    title = f"{json.dumps(token, ensure_ascii=False)} score {fmt(score)}"
    data_score = "nan" if missing else repr(float(score))  # type: ignore[arg-type]
    return (
        f'<span class="{cls}" style="background-color:{bg};color:{fg}" '
        f'data-score="{data_score}" title="{esc(title)}">{esc(visible_token(token))}</span>'
    )
