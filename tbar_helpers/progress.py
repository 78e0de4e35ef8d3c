"""Progress bars: tqdm's widget bar in a live notebook, its text bar elsewhere.

The book build sets ``TBAR_TEXT_PROGRESS=1`` for the kernels it runs: a widget bar saved into an executed
notebook is a widget area the HTML book cannot draw (it has no kernel), while a text bar goes to stderr,
which the build leaves out of the pages.
"""
from __future__ import annotations

import os


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm``, or ``tqdm.std.tqdm`` when ``$TBAR_TEXT_PROGRESS`` is set."""
    if os.environ.get("TBAR_TEXT_PROGRESS"):
        from tqdm.std import tqdm as bar
    else:
        from tqdm.auto import tqdm as bar
    return bar(*args, **kwargs)
