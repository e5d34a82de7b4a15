"""Text from outside (file names, worker ids, reasons) made safe inside Markdown artifacts.

The run summaries and stage reports are Markdown shown in the Prefect UI. A file name such
as ``a|b*_[x](javascript:alert(1))<img>.jpg`` must read as itself there: it must not split a
table cell, start emphasis or code, become a link, or open an HTML tag.
"""

from __future__ import annotations

import re

# Backslash first, so the escapes added for the others are not escaped again.
_PUNCTUATION = re.compile(r"([\\`*_\[\]{}()#+!|~])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def markdown_text(value: object) -> str:
    """``value`` as literal inline Markdown text: one line, no markup, no HTML."""
    text = _LINE_BREAKS.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _PUNCTUATION.sub(r"\\\1", text)
