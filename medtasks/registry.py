"""One generic name -> object registry, used for tasks, models, losses and backbones.

Registry names are the public API (design §7.2): one canonical name per thing. Registering a
name twice raises; asking for an unknown name raises a ``KeyError`` that suggests the closest
names and lists every option, because a typo in a config or on the command line should cost
the user one glance, not a search through the source.

Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(): return "net"
    >>> MODELS.get("tiny")()
    'net'
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


def closest(name: str, options: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Return up to ``n`` options that look like ``name`` (difflib ratio >= 0.5)."""
    return difflib.get_close_matches(name, list(options), n=n, cutoff=0.5)


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """Format a "did you mean" hint plus the list of valid options."""
    near = closest(name, options)
    hint = f" Did you mean {' or '.join(repr(x) for x in near)}?" if near else ""
    return f"{hint} Valid options: {', '.join(sorted(options)) or '(none registered)'}."


class UnknownNameError(KeyError):
    """An unknown registry name; the message carries the suggestion (KeyError repr-quotes it)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class Registry:
    """A named mapping of factories; see module docstring."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; duplicate names raise ``ValueError``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r}).")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        """Return the object registered as ``name`` or raise with a suggestion."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"Unknown {self.kind} {name!r}.{did_you_mean(name, self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


TASKS = Registry("task")
MODELS = Registry("model")
BACKBONES = Registry("backbone")
LOSSES = Registry("loss")
