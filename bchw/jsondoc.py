"""Reading JSON that bchw did not necessarily write: model headers, manifests, folding files.

``json.loads`` alone lets a hostile or broken file through to places that then fail without
naming it: a document nested 100,000 deep raises RecursionError, a 5,001-digit integer
ValueError (or nothing, where the process has lifted Python's digit limit), and one nested a
few hundred deep passes the parser but not the code that walks it. :func:`parse` refuses all
of them with :class:`JsonProblem`, whose message the caller prefixes with the file's name.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # no bchw document nests deeper than a handful of levels
MAX_DIGITS = 60  # nor needs an integer wider than 64 bits (20 digits)


class JsonProblem(ValueError):
    """Why a text is not an acceptable JSON document (one line)."""


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise JsonProblem(f"it holds an integer of {digits} digits")
    return int(text)


def depth(value: Any) -> int:
    """How deeply ``value`` nests arrays and objects (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            break
    return deepest


def parse(text: str | bytes, **hooks: Any) -> Any:
    """The document in ``text`` (``hooks``: ``object_pairs_hook``, ``parse_constant``)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        document = json.loads(text, parse_int=_integer, **hooks)
    except JsonProblem:
        raise
    except RecursionError:
        raise JsonProblem("it nests too deeply") from None
    except UnicodeDecodeError as exc:
        raise JsonProblem(f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError and the hooks' own errors
        raise JsonProblem(str(exc).splitlines()[0][:160] or type(exc).__name__) from None
    if depth(document) > MAX_DEPTH:
        raise JsonProblem(f"it nests deeper than {MAX_DEPTH} levels")
    return document
