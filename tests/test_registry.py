"""The generic registry: names, aliases, name:arg, lazy entries, built-ins module, suggestions in errors."""

from __future__ import annotations

import sys
import types

import pytest

from clipmath.errors import ClipmathError, ComposeError
from clipmath.registry import Registry, import_ref


def test_register_get_alias_and_decorator():
    reg: Registry[object] = Registry("widget")
    reg.register("alpha", 1, aliases=("a",))

    @reg.register("beta")
    class Beta:
        pass

    assert reg.get("alpha") == 1 and reg.get("a") == 1
    assert reg.get("beta") is Beta
    assert reg.names() == ["alpha", "beta"]
    assert "a" in reg and "gamma" not in reg and 3 not in reg
    assert reg.aliases() == {"a": "alpha"}
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 2)
    reg.register("alpha", 2, replace=True)
    assert reg.get("alpha") == 2
    reg.unregister("alpha")
    assert "alpha" not in reg and "a" not in reg


def test_unknown_name_suggests_close_matches_and_uses_the_error_class():
    reg: Registry[int] = Registry("compose method", error=ComposeError)
    for name in ("delta", "image", "text"):
        reg.register(name, 0)
    with pytest.raises(
        ComposeError, match=r"unknown compose method 'detla'; did you mean 'delta'\?.*available: delta, image, text"
    ):
        reg.get("detla")
    with pytest.raises(ComposeError) as info:
        reg.get("zzz")
    assert "did you mean" not in str(info.value)


def test_name_with_argument():
    reg: Registry[str] = Registry("encoder", arg_name="seed")
    reg.register("tiny", "T")
    assert reg.resolve("tiny") == ("T", None)
    assert reg.resolve("tiny:7") == ("T", "7")
    with pytest.raises(ClipmathError, match="empty seed"):
        reg.resolve("tiny:")
    with pytest.raises(ClipmathError, match="unknown encoder 'nope'"):
        reg.resolve("nope:3")
    no_args: Registry[str] = Registry("index kind")
    no_args.register("exact", "E")
    with pytest.raises(ClipmathError, match="takes no ':argument'"):
        no_args.resolve("exact:3")
    with pytest.raises(ValueError):
        reg.register("bad:name", "x")


def test_lazy_entries_import_on_first_use(monkeypatch):
    module = types.ModuleType("clipmath_test_lazy_target")
    module.value = {"loaded": True}
    monkeypatch.setitem(sys.modules, module.__name__, module)
    reg: Registry[dict] = Registry("thing")
    reg.register("lazy", f"{module.__name__}:value")
    assert reg.get("lazy") is module.value
    assert import_ref("os.path:join").__name__ == "join"
    with pytest.raises(ValueError):
        import_ref("no-colon")


def test_builtins_module_registers_on_first_access(monkeypatch):
    reg: Registry[int] = Registry("fruit", builtins="clipmath_test_builtin_fruits")
    module = types.ModuleType("clipmath_test_builtin_fruits")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    # importing the module is what registers built-ins; simulate by registering from a fresh import
    del sys.modules[module.__name__]
    calls = []

    import importlib.abc
    import importlib.machinery

    class Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, mod):
            calls.append(1)
            reg.register("apple", 1)
            reg.register("pear", 2)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "clipmath_test_builtin_fruits":
                return importlib.machinery.ModuleSpec(name, Loader())
            return None

    finder = Finder()
    sys.meta_path.insert(0, finder)
    try:
        assert reg.names() == ["apple", "pear"]
        assert reg.get("pear") == 2 and len(reg) == 2
        reg.names()
        assert calls == [1]
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop("clipmath_test_builtin_fruits", None)
