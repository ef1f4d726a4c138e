"""Old public names kept working after a rename, each with a ``DeprecationWarning``.

hcl spells counts ``num_*`` and uses American ``color`` / ``neighbor`` in identifiers
(``tests/test_naming.py`` checks it); these two helpers keep the names that predate that rule.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deprecated_attribute", "renamed_kwargs"]

_F = TypeVar("_F", bound=Callable[..., Any])


def renamed_kwargs(**old_to_new: str) -> Callable[[_F], _F]:
    """Let the decorated callable still take the old names of renamed keyword arguments.

    An old name is passed on as its new name with a ``DeprecationWarning``; giving both is a
    ``TypeError``. ``inspect.signature`` shows the new names.

    Example:
        ``@renamed_kwargs(n_views="num_views")`` above ``def __init__(self, num_views=2)``.
    """

    def decorate(func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{func.__qualname__}() got both {new!r} and its deprecated name {old!r}")
                warnings.warn(
                    f"{func.__qualname__}(): {old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=2
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def deprecated_attribute(old: str, new: str) -> property:
    """A class attribute ``old`` that reads and writes attribute (or method) ``new``, warning on use.

    Example:
        ``n_views = deprecated_attribute("n_views", "num_views")`` in a class body.
    """

    def warn() -> None:
        warnings.warn(f"{old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3)

    def fget(self: Any) -> Any:
        warn()
        return getattr(self, new)

    def fset(self: Any, value: Any) -> None:
        warn()
        setattr(self, new, value)

    return property(fget, fset, doc=f"Deprecated name of ``{new}``.")
