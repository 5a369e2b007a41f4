"""Colours every figure shares: one fixed colour per state and per response group, and a
categorical palette that gives each of a figure's categories (patients, clusters, samples) its
own colour.

A state keeps its colour on every page: a figure never colours states by their position in
the dataset's list (Tex_term was blue on one page and orange on another when it did).
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.colors import to_hex

from ..contract import (
    AMBIGUOUS_STATE,
    EFFECTOR_MEMORY,
    NAIVE_LIKE,
    NON_RESPONDER,
    OTHER_STATE,
    RESPONDER,
    TEX_INT,
    TEX_TERM,
    TPEX,
)

#: One colour per state (Okabe-Ito, colour-blind safe): the lineage blue -> orange ->
#: vermillion, the other CD8 states green and purple, what is not a state in greys.
STATE_COLOURS: dict[str, str] = {
    TPEX: "#0072B2",
    TEX_INT: "#E69F00",
    TEX_TERM: "#D55E00",
    NAIVE_LIKE: "#009E73",
    EFFECTOR_MEMORY: "#CC79A7",
    OTHER_STATE: "#999999",
    AMBIGUOUS_STATE: "#CCCCCC",
}
#: Colours for the response groups, the same on every figure (Okabe-Ito).
RESPONSE_COLOURS = {RESPONDER: "#0072B2", NON_RESPONDER: "#D55E00"}
RESPONSE_LABELS = {RESPONDER: "responder", NON_RESPONDER: "non-responder"}
#: Cells without a label (no state, no response, no patient).
MISSING_COLOUR = "#DDDDDD"

# a state label texflow does not write (a hand-labelled dataset): a colour of its own, chosen by
# its name, so it too is the same on every page, and none of STATE_COLOURS
_EXTRA_STATE_COLOURS = ("#56B4E9", "#F0E442", "#8C564B", "#17BECF", "#BCBD22", "#7F3C8D")


def state_colour(state: str) -> str:
    """The colour of `state` on every figure."""
    if state in STATE_COLOURS:
        return STATE_COLOURS[state]
    return _EXTRA_STATE_COLOURS[zlib.crc32(str(state).encode()) % len(_EXTRA_STATE_COLOURS)]


def categorical_colours(n: int) -> list[str]:
    """`n` distinct colours (hex) for the categories of one figure: tab10 up to 10, tab20 (dark
    shades first) up to 20, then tab20b and tab20c (60 in all), beyond that evenly spaced hues
    in three lightnesses. No colour repeats, so patient 1 and patient 6 of 19 differ."""
    if n <= 10:
        return [to_hex(c) for c in colormaps["tab10"].colors[:n]]
    tab20 = colormaps["tab20"].colors
    palette = [*tab20[0::2], *tab20[1::2]]
    palette += [c for name in ("tab20b", "tab20c") for c in colormaps[name].colors]
    colours = list(dict.fromkeys(to_hex(c) for c in palette))
    if n <= len(colours):
        return colours[:n]
    extra = n - len(colours)
    for i in range(extra * 2):  # more candidates than needed: a few may fall on a listed colour
        lightness = (0.35, 0.55, 0.75)[i % 3]
        colours.append(to_hex(colorsys.hls_to_rgb(i / (extra * 2), lightness, 0.7)))
        colours = list(dict.fromkeys(colours))
        if len(colours) >= n:
            break
    return colours[:n]


def category_colours(categories: Sequence[str]) -> dict[str, str]:
    """A distinct colour per category, in the order given (`categorical_colours`)."""
    return dict(zip(map(str, categories), categorical_colours(len(categories)), strict=True))
