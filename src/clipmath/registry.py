"""One small registry for every named thing in clipmath: methods, encoders, language models, benchmarks, decoders…

A :class:`Registry` maps names to entries (usually a ``*Spec`` dataclass that carries the entry's facts and how to
load it). Entries may be registered directly, or lazily as ``"module:attribute"`` so that nothing heavy is imported
until the entry is used. Built-in entries are registered by a module named at construction (``builtins=``), imported
on first access, so the registry module itself imports nothing and never cycles.

    >>> COLOURS = Registry("colour")
    >>> COLOURS.register("red", "#f00")
    >>> COLOURS.get("red")
    '#f00'
    >>> COLOURS.resolve("red:0.5")          # "name:arg" -> (entry, "arg")
    ('#f00', '0.5')
    >>> COLOURS.get("rde")                   # raises ClipmathError: unknown colour 'rde'; did you mean 'red'? ...

Lookups are case-sensitive on the registered name; aliases map other spellings to one entry. Unknown names raise the
registry's error class (a :class:`~clipmath.errors.ClipmathError`) with close-match suggestions, so every front end
can print the message as it is.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from clipmath.errors import ClipmathError

T = TypeVar("T")

__all__ = ["LazyRef", "Registry", "import_ref"]


def import_ref(ref: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and return the attribute."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"a lazy reference is 'module:attribute', got {ref!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class LazyRef:
    """An entry not imported yet: ``"module:attribute"``, resolved (once) on first :meth:`Registry.get`."""

    ref: str

    def load(self) -> Any:
        return import_ref(self.ref)


class Registry(Generic[T]):
    """Named entries of one kind, with aliases, ``name:arg`` parsing, lazy imports and helpful errors.

    ``kind`` names the entries in messages ("compose method", "encoder"); ``error`` is the exception class raised
    for an unknown name; ``builtins`` is a module imported on first access that registers the built-in entries;
    ``arg_name`` describes what may follow a colon (``None``: names take no argument).
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[ClipmathError] = ClipmathError,
        builtins: str | None = None,
        arg_name: str | None = None,
    ) -> None:
        self.kind = kind
        self.error = error
        self.arg_name = arg_name
        self._builtins = builtins
        self._entries: dict[str, T | LazyRef] = {}
        self._aliases: dict[str, str] = {}
        self._lock = threading.RLock()
        self._loading_builtins = False

    # -- registering ---------------------------------------------------------------------------------------------
    def register(
        self, name: str, entry: T | LazyRef | str | None = None, *, aliases: tuple[str, ...] = (), replace: bool = False
    ) -> Any:
        """Register ``entry`` under ``name`` (a ``"module:attr"`` string registers it lazily).

        Without ``entry`` this returns a decorator: ``@REGISTRY.register("name")`` over a class or function.
        Registering a taken name raises ``ValueError`` unless ``replace=True``.
        """
        if entry is None:

            def decorator(obj: Any) -> Any:
                self.register(name, obj, aliases=aliases, replace=replace)
                return obj

            return decorator
        if not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be non-empty and hold no ':', got {name!r}")
        stored: T | LazyRef = LazyRef(entry) if isinstance(entry, str) and ":" in entry else entry  # type: ignore[assignment]
        with self._lock:
            self._ensure_builtins()
            if not replace and (name in self._entries or name in self._aliases):
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = stored
            self._aliases.pop(name, None)
            for alias in aliases:
                if not replace and (alias in self._entries or alias in self._aliases):
                    raise ValueError(f"{self.kind} alias {alias!r} is already registered")
                self._aliases[alias] = name
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (for tests and plug-ins that clean up after themselves)."""
        with self._lock:
            self._ensure_builtins()
            canonical = self._aliases.get(name, name)
            if canonical not in self._entries:
                raise self._unknown(name)
            del self._entries[canonical]
            for alias in [a for a, target in self._aliases.items() if target == canonical]:
                del self._aliases[alias]

    # -- looking up ----------------------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; raises the registry's error if unknown."""
        self._ensure_builtins()
        canonical = self._aliases.get(name, name)
        if canonical not in self._entries:
            raise self._unknown(name)
        return canonical

    def get(self, name: str) -> T:
        """The entry for ``name`` (no ``:arg`` allowed here; use :meth:`resolve` for that)."""
        canonical = self.canonical(name)
        entry = self._entries[canonical]
        if isinstance(entry, LazyRef):
            with self._lock:
                entry = self._entries[canonical]
                if isinstance(entry, LazyRef):
                    loaded = entry.load()
                    self._entries[canonical] = loaded
                    entry = loaded
        return entry  # type: ignore[return-value]

    def split(self, spec: str) -> tuple[str, str | None]:
        """``"name:arg"`` -> ``(canonical name, "arg")``; ``"name"`` -> ``(canonical name, None)``.

        A name registered with a colon-free spelling always wins: ``split`` only cuts at the first colon when the
        whole string is not itself a known name.
        """
        self._ensure_builtins()
        if spec in self._entries or spec in self._aliases:
            return self.canonical(spec), None
        name, sep, arg = spec.partition(":")
        if not sep:
            raise self._unknown(spec)
        canonical = self.canonical(name)
        if self.arg_name is None:
            raise self.error(f"{self.kind} '{canonical}' takes no ':argument' (got {spec!r})")
        if not arg:
            raise self.error(f"{self.kind} '{canonical}': empty {self.arg_name} after ':' in {spec!r}")
        return canonical, arg

    def resolve(self, spec: str) -> tuple[T, str | None]:
        """``"name[:arg]"`` -> ``(entry, arg or None)``."""
        name, arg = self.split(spec)
        return self.get(name), arg

    def resolve_or(
        self, spec: str, fallback: Callable[[str], T], *, bare: bool = False, hint: str = ""
    ) -> tuple[T, str | None]:
        """``"name[:arg]"`` of a registered entry -> ``(entry, arg)``; else ``(fallback(spec), None)`` for a hub
        name (``org/name``; with ``bare``, any other name too) or an existing local path; else the unknown-name
        error, with close matches and ``hint``. The one rule for names that may be hub models or folders."""
        if spec in self or spec.partition(":")[0] in self:
            return self.resolve(spec)
        if bare or "/" in spec or os.sep in spec or _exists(spec):
            return fallback(spec), None
        error = self._unknown(spec)
        raise self.error(f"{error}; {hint}" if hint else str(error)) from None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure_builtins()
        return name in self._entries or name in self._aliases

    def names(self) -> list[str]:
        """Registered names in registration order (aliases not included)."""
        self._ensure_builtins()
        return list(self._entries)

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        self._ensure_builtins()
        return dict(self._aliases)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, entry)`` for every entry, importing lazy ones."""
        for name in self.names():
            yield name, self.get(name)

    def list(self) -> list[T]:
        """Every entry, in registration order (lazy entries are imported)."""
        return [entry for _, entry in self.items()]

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    # -- internals -----------------------------------------------------------------------------------------------
    def _ensure_builtins(self) -> None:
        if self._builtins is None or self._loading_builtins:
            return
        with self._lock:
            if self._builtins is None or self._loading_builtins:
                return
            module, self._loading_builtins = self._builtins, True
            try:
                importlib.import_module(module)
                self._builtins = None
            finally:
                self._loading_builtins = False

    def _unknown(self, name: str) -> ClipmathError:
        known = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(self._entries) or "none registered"
        return self.error(f"unknown {self.kind} {name!r}{hint} (available: {listed})")


def _exists(path: str) -> bool:
    try:
        return os.path.exists(path)
    except (ValueError, OSError):  # a NUL byte, a name too long
        return False


#: The entry-point group of installed plugins: modules that register methods, models, trainers, decoders,
#: benchmarks or index kinds when imported (``[project.entry-points."clipmath.plugins"] mine = "my_package.plugin"``).
PLUGIN_GROUP = "clipmath.plugins"


def load_plugins() -> list[str]:
    """Import every installed plugin of :data:`PLUGIN_GROUP` (front ends call this once at start-up); returns their
    names. A plugin that fails to import is a one-line :class:`ClipmathError` naming it."""
    from importlib.metadata import entry_points

    loaded = []
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party import is reported the same way
            raise ClipmathError(f"the clipmath plugin {point.name!r} ({point.value}) failed to load: {exc}") from None
        loaded.append(point.name)
    return loaded
