"""Fill ``{{NAME}}`` placeholders in BPF C text, refusing anything left unfilled."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


class RenderError(ValueError):
    """A placeholder with no value, or a value for no placeholder."""


def render(template: str, values: Mapping[str, object]) -> str:
    """Substitute every placeholder; fail on a missing or an unused value."""
    wanted = set(_PLACEHOLDER.findall(template))
    missing = wanted - values.keys()
    if missing:
        raise RenderError(f"unfilled placeholders: {', '.join(sorted(missing))}")
    unused = values.keys() - wanted
    if unused:
        raise RenderError(f"values for no placeholder: {', '.join(sorted(unused))}")
    text = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    if "{{" in text:
        raise RenderError("a placeholder survived rendering")
    return text
