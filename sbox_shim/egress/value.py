"""Immutable value objects without `dataclasses`, whose import (inspect, ast, dis...) costs
milliseconds on every allowlisted step: the proxy's modules load while the sandbox starts."""
from __future__ import annotations


class Value:
    """Fields named in __slots__, set once by `_init`; compared, hashed and shown by them."""

    __slots__: tuple[str, ...] = ()

    def _init(self, **fields: object) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, fields[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"
