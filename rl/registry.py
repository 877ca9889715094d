"""Registries by name, plus plug-ins by import string.

A registry maps short names to objects (or to lazy ``"module:attr"`` strings, so registering
costs no import). ``resolve`` accepts a registered name, ``package.module:attr`` or
``path/to/file.py:attr``; an unknown name fails listing the known ones.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name or import string that does not resolve; the message says how to fix it."""


def import_object(spec: str, *, what: str = "object") -> Any:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` and return the attribute."""
    if ":" not in spec:
        raise RegistryError(f"{what} {spec!r} is not an import string; write 'package.module:attr' or 'file.py:attr'")
    module_part, _, attr_path = spec.rpartition(":")
    if not module_part or not attr_path:
        raise RegistryError(f"{what} {spec!r}: both the module and the attribute after ':' are needed")
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise RegistryError(f"{what} {spec!r}: file {str(path)!r} does not exist")
        module_name = f"relay_plugin_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise RegistryError(f"{what} {spec!r}: importing {str(path)!r} failed: {exc!r}") from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise RegistryError(f"{what} {spec!r}: cannot import module {module_part!r} ({exc})") from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"{what} {spec!r}: module {module_part!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names to objects. Duplicate names are refused; values may be lazy import strings."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """``registry.register("name", obj)``, ``registry.register("name", "mod:attr")`` or as a decorator."""
        if obj is None:

            def decorator(fn: T) -> T:
                self.register(name, fn)
                return fn

            return decorator
        if name in self._entries and self._entries[name] is not obj:
            raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = obj
        return obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def resolve(self, name_or_spec: str) -> T:
        """A registered name, or an import string (``pkg.mod:attr``, ``file.py:attr``)."""
        if name_or_spec in self._entries:
            entry = self._entries[name_or_spec]
            if isinstance(entry, str):
                entry = import_object(entry, what=self.kind)
                self._entries[name_or_spec] = entry
            return entry  # type: ignore[return-value]
        if ":" in name_or_spec:
            return import_object(name_or_spec, what=self.kind)
        close = difflib.get_close_matches(name_or_spec, self.names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RegistryError(
            f"unknown {self.kind} {name_or_spec!r}; {hint}known: {', '.join(self.names()) or '(none)'}; "
            "or give an import string 'package.module:attr' or 'path/to/file.py:attr'"
        )
