"""Declarative config rules: what a config value must be, checked before any work starts.

A dataclass field declared with :func:`checked` carries a :class:`Check` (ranges, ``0 or >= 2``, per-item rules,
a list length, a sum, ordered pairs, names from a registry, a pattern); :func:`check_config` and
:func:`medtasks.config.from_dict` apply every field's rule and then each section's ``validate()`` (the rules that
relate several fields), raising :class:`ConfigError` with the key path, the rule and the value. Split out of
:mod:`medtasks.config` (which reads YAML, merges ``base:`` chains and converts types) as a concept of its own.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Train:
    ...     epochs: int = checked(60, ge=1)
    >>> check_config(Train(epochs=0), "train")
    Traceback (most recent call last):
    ...
    medtasks.config_rules.ConfigError: train.epochs: expected a value >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Iterable, Sequence, Union

from medtasks.registry import Registry, did_you_mean

__all__ = ["CHECK", "Check", "ConfigError", "Options", "check_config", "check_fields", "checked", "field_rules"]


class ConfigError(ValueError):
    """A config problem; the message starts with the key path and says how to fix it."""


# ---------------------------------------------------------------------------------------------
# declarative field rules: ranges, counts, sums, known names (checked before any work starts)

CHECK = "medtasks.check"   # the dataclass field metadata key holding a field's :class:`Check`

Options = Union[Registry, Iterable[str], Callable[[], Union[Registry, Iterable[str]]]]


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclasses.dataclass(frozen=True)
class Check:
    """The rules of one config field, declared with :func:`checked` and enforced by :func:`from_dict` (before the
    section's own ``validate()``, which is left with the rules that relate several fields).

    ``None`` (an optional field left unset) passes every rule. Range rules apply to numbers only, so a field such
    as ``pos_weight: "prevalence" | list[float] | None`` checks its list's items and lets the keyword through.

    Attributes:
        ge, gt, le, lt: bounds (``>=``, ``>``, ``<=``, ``<``).
        also: values allowed outside the bounds (``cv.folds``: 0 = off, else ``>= 2``).
        each: apply the bounds to every item of a list value instead of the value.
        length: the number of items a list must have.
        total: the sum the items must have (within 1e-6): fractions summing to 1.
        ascending: a ``[low, high]`` pair with ``low <= high``.
        options: the known names: a :class:`~medtasks.registry.Registry`, a list, or a callable returning either
            (called at check time, so a registry is read once its package has registered its names).
        what: the noun for an unknown name (default: the registry's kind, else "name").
        pattern: a regular expression the whole string must match.
        note: what the value means, appended to the message (e.g. ``"0 = off"``).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[Any, ...] = ()
    each: bool = False
    length: int | None = None
    total: float | None = None
    ascending: bool = False
    options: Any = None
    what: str = ""
    pattern: str | None = None
    note: str = ""

    def _range(self) -> str:
        lo = f"[{_fmt(self.ge)}" if self.ge is not None else f"({_fmt(self.gt)}" if self.gt is not None else None
        hi = f"{_fmt(self.le)}]" if self.le is not None else f"{_fmt(self.lt)})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        return f"{'<=' if self.le is not None else '<'} {hi[:-1]}" if hi else ""

    def _in_range(self, v: float) -> bool:
        if v in self.also:
            return True
        if isinstance(v, float) and math.isnan(v):
            return False
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt))

    def _expected(self) -> str:
        head = " or ".join(_fmt(a) for a in self.also)
        return f"expected {head + ' or ' if head else ''}a value {self._range()}"

    def _tail(self) -> str:
        return f" ({self.note})" if self.note else ""

    def problem(self, value: Any, where: str) -> str | None:
        """The message for ``value`` at key path ``where`` breaking a rule, or None."""
        if value is None:
            return None
        items = value if isinstance(value, (list, tuple)) else None
        if items is not None and self.length is not None and len(items) != self.length:
            return f"{where}: expected {self.length} values, got {len(items)} ({list(items)}){self._tail()}"
        has_range = any(b is not None for b in (self.ge, self.gt, self.le, self.lt))
        if has_range and self.each and items is not None:
            for i, v in enumerate(items):
                if _num(v) and not self._in_range(v):
                    return f"{where}[{i}]: {self._expected()}, got {_fmt(v)} (in {list(items)}){self._tail()}"
        elif has_range and _num(value) and not self._in_range(value):
            return f"{where}: {self._expected()}, got {_fmt(value)}{self._tail()}"
        if items is not None and self.total is not None and all(_num(v) for v in items):
            if abs(sum(items) - self.total) > 1e-6:
                return (f"{where}: expected values summing to {_fmt(self.total)}, got {list(items)} "
                        f"(sum {sum(items):.6g}){self._tail()}")
        if items is not None and self.ascending and len(items) == 2 and items[0] > items[1]:
            return f"{where}: expected [low, high] with low <= high, got {list(items)}{self._tail()}"
        if self.pattern is not None and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            return f"{where}: {value!r} does not have the expected form{self._tail()}"
        if self.options is not None and isinstance(value, str):
            opts = self.options() if callable(self.options) and not isinstance(self.options, Registry) else self.options
            kind = self.what or (opts.kind if isinstance(opts, Registry) else "name")
            names = opts.names() if isinstance(opts, Registry) else list(opts)
            if value not in names:
                return f"{where}: unknown {kind} {value!r}.{did_you_mean(value, names)}{self._tail()}"
        return None


def checked(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            also: Sequence[Any] = (), each: bool = False, length: int | None = None, total: float | None = None,
            ascending: bool = False, options: Options | None = None, what: str = "", pattern: str | None = None,
            note: str = "") -> Any:
    """A dataclass field with the rules of :class:`Check`, checked when a config is loaded; the error names the
    key path, the rule and the value.

    Example:
        >>> @dataclasses.dataclass
        ... class Train:
        ...     epochs: int = checked(60, ge=1)
        ...     split: list[float] = checked(factory=lambda: [0.8, 0.2], each=True, ge=0, le=1, total=1)
        >>> check_config(Train(epochs=-1), "train")
        Traceback (most recent call last):
        ...
        medtasks.config_rules.ConfigError: train.epochs: expected a value >= 1, got -1
    """
    rule = Check(ge=ge, gt=gt, le=le, lt=lt, also=tuple(also), each=each, length=length, total=total,
                 ascending=ascending, options=options, what=what, pattern=pattern, note=note)
    return dataclasses.field(default=default, default_factory=factory, metadata={CHECK: rule})


@functools.lru_cache(maxsize=None)
def field_rules(cls: type) -> dict[str, Check]:
    """The :class:`Check` of every field of dataclass ``cls`` that has one. A rule is inherited: a subclass that
    only changes a field's default (``monitor: str = "val_dice"``) keeps its base class's rule; declaring
    :func:`checked` again replaces it."""
    rules: dict[str, Check] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for f in dataclasses.fields(klass):
                if CHECK in f.metadata:
                    rules[f.name] = f.metadata[CHECK]
    return rules


def check_config(cfg: Any, path: str = "") -> None:
    """Check a built config tree: every field's rules, every nested section, then each section's ``validate()``;
    the first problem raises :class:`ConfigError` naming its key path. :func:`from_dict` runs the same checks on
    what it builds; this is for a config made in code (or its defaults)."""
    check_fields(cfg, path, nested=None)


def check_fields(obj: Any, path: str, nested: Iterable[str] | None) -> None:
    """Rules of ``obj``'s fields; the nested sections named in ``nested`` (None: all) checked recursively; then
    ``obj.validate()``."""
    prefix = f"{path}." if path else ""
    rules = field_rules(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        rule = rules.get(f.name)
        if rule is not None and (msg := rule.problem(value, prefix + f.name)):
            raise ConfigError(msg)
        if (nested is None or f.name in nested) and dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_fields(value, prefix + f.name, None)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None


