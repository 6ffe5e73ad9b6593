"""The package's shape, checked from its source (function-level imports included).

- no import cycles between modules;
- ``engine/`` never imports ``jupyter/``, IPython, ipywidgets or anywidget;
- no module imports or calls another module's ``_private`` names (a leading-underscore
  module that exists to be shared, such as ``engine/_shard.py``, is fine), and no code
  reaches into another object's ``_private`` attributes except its own (``self._x``,
  ``cls._x``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lmprobe_jupyter"
FORBIDDEN_IN_ENGINE = ("IPython", "ipywidgets", "anywidget", "lmprobe_jupyter.jupyter")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(p): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for p in sorted(PACKAGE.rglob("*.py"))
        if "labextension_src" not in p.parts  # the extension's npm tree, not ours
    }


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module, is_package: bool):
    """(imported module, imported name or None, lineno) for every import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, is_package)
            for a in node.names:
                yield target, a.name, node.lineno


MODULES = _modules()
PACKAGES = {_module_name(p) for p in PACKAGE.rglob("__init__.py") if "node_modules" not in p.parts}


def _internal_edges():
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, tree in MODULES.items():
        for target, name, _ in _imports(mod, tree, mod in PACKAGES):
            if name and f"{target}.{name}" in MODULES:
                edges[mod].add(f"{target}.{name}")
            elif target in MODULES and target != mod:
                edges[mod].add(target)
    return edges


def _cycles(edges) -> list[list[str]]:
    # The package __init__ files only re-export lazily (module-level __getattr__): an edge
    # *into* a package __init__ from its own submodules is the usual Python layering.
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if n in PACKAGES and m.startswith(n + "."):
                continue
            if state.get(n) == 1:
                found.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_no_import_cycles():
    assert _cycles(_internal_edges()) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_engine_never_imports_the_notebook_layer():
    bad = []
    for mod, tree in MODULES.items():
        if not mod.startswith("lmprobe_jupyter.engine"):
            continue
        for target, name, line in _imports(mod, tree, mod in PACKAGES):
            full = f"{target}.{name}" if name else target
            if any(full == f or full.startswith(f + ".") for f in FORBIDDEN_IN_ENGINE):
                bad.append(f"{mod}:{line} imports {full}")
            if target == "lmprobe_jupyter" and name == "jupyter":
                bad.append(f"{mod}:{line} imports lmprobe_jupyter.jupyter")
    assert bad == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_anothers_private_names():
    bad = []
    for mod, tree in MODULES.items():
        for target, name, line in _imports(mod, tree, mod in PACKAGES):
            if not target.startswith("lmprobe_jupyter") or name is None:
                continue
            if _is_private(name) and f"{target}.{name}" not in MODULES:
                bad.append(f"{mod}:{line} imports {target}.{name}")
    assert bad == []


def _own_private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines itself: methods, classes, functions, and attributes
    it assigns (``self._x = ...``). Using them on any object is the module's own business."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if _is_private(n)}


def _private_attribute_uses(tree: ast.Module):
    """``obj._name`` where ``_name`` is not one of the module's own private names and
    ``obj`` is not ``self``/``cls``."""
    own = _own_private_names(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        if node.attr in own:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue  # an object's own (possibly inherited) state
        yield node.lineno, ast.unparse(node)


#: Library objects whose documented API uses leading underscores.
ALLOWED_FOREIGN = {
    "sys._getframe",
    "os._exit",
    "lm._module",  # nnsight's wrapped torch module (NNsight documents ``_module``)
}


def test_no_code_reaches_into_private_attributes_of_project_objects():
    bad = []
    for mod, tree in MODULES.items():
        for line, expr in _private_attribute_uses(tree):
            if expr in ALLOWED_FOREIGN:
                continue
            bad.append(f"{mod}:{line} {expr}")
    assert bad == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .probe import _helper", ["imports"]),
        ("from .probe import helper", []),
        ("from ._shard import write", []),
    ],
    ids=["private-name", "public-name", "shared-private-module"],
)
def test_private_import_rule_on_examples(source, expected, monkeypatch):
    tree = ast.parse(source)
    mod = "lmprobe_jupyter.engine.evaluation.sweep"
    found = []
    for target, name, _ in _imports(mod, tree, False):
        if _is_private(name) and f"{target}.{name}" not in MODULES:
            found.append("imports")
    assert found == expected


# ---------------------------------------------------------------------- the engine's layers
#: The engine's subpackages from the bottom up. A module-level import may only point down
#: (or within its own subpackage); the engine root holds the shared vocabulary (input
#: checks, progress bars, profiling, the display seam) that every layer may use.
#: ``probes``' facade (``Probe``) reaches up into evaluation, monitoring and sharing only
#: inside the methods that delegate to them (function-level imports), so importing a probe
#: never imports a sweep, a monitor or the hub.
LAYERS = {
    "lmprobe_jupyter.engine": 0,
    "lmprobe_jupyter.engine.cache": 1,
    "lmprobe_jupyter.engine.extraction": 2,
    "lmprobe_jupyter.engine.probes": 3,
    "lmprobe_jupyter.engine.evaluation": 4,
    "lmprobe_jupyter.engine.monitoring": 4,
    "lmprobe_jupyter.engine.sharing": 4,
}
#: How many modules a folder may hold, and how long a module may be.
MAX_MODULES_PER_FOLDER = 15
MAX_MODULE_LINES = 800


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["lmprobe_jupyter", "engine"]:
        return None
    sub = ".".join(parts[:3])
    return sub if sub in LAYERS and len(parts) > 3 or sub in PACKAGES else "lmprobe_jupyter.engine"


def _module_level_imports(module: str, tree: ast.Module):
    """Imports executed when ``module`` is imported (not those inside functions)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _imports(
                module, ast.Module(body=[node], type_ignores=[]), module in PACKAGES
            )
        else:
            todo.extend(ast.iter_child_nodes(node))


def _layer_violations(modules) -> list[str]:
    bad = []
    for mod, tree in modules.items():
        here = _layer(mod)
        if here is None:
            continue
        for target, name, line in _module_level_imports(mod, tree):
            full = f"{target}.{name}" if name and f"{target}.{name}" in MODULES else target
            there = _layer(full)
            if there is None or there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                bad.append(f"{mod}:{line} imports {full} ({there} is not below {here})")
    return bad


def test_engine_layers_only_import_downwards_at_module_level():
    assert _layer_violations(MODULES) == []


def test_layer_rule_on_examples():
    up = ast.parse("from ..probes.probe import Probe")
    lazy = ast.parse("def f():\n    from ..probes.probe import Probe\n")
    down = ast.parse("from ..extraction.runtime import ModelRuntime")
    mod = "lmprobe_jupyter.engine.cache.store"
    assert _layer_violations({mod: up}) and not _layer_violations({mod: lazy})
    assert not _layer_violations({"lmprobe_jupyter.engine.probes.probe": down})


def test_engine_modules_are_short_and_folders_small():
    engine = PACKAGE / "engine"
    lines = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
        for p in engine.rglob("*.py")
    }
    assert {k: n for k, n in lines.items() if n > MAX_MODULE_LINES} == {}
    crowded = {
        str(d.relative_to(PACKAGE)): n
        for d in [engine, *engine.rglob("*/")]
        if d.is_dir()
        and (n := sum(1 for p in d.glob("*.py") if p.name != "__init__.py"))
        > MAX_MODULES_PER_FOLDER
    }
    assert crowded == {}


def test_every_module_says_what_it_is_for():
    """Each module opens with a docstring whose first line is a sentence about its job."""
    missing = []
    for mod, tree in MODULES.items():
        doc = ast.get_docstring(tree)
        first = doc.splitlines()[0] if doc else ""
        if len(first) < 20:
            missing.append(f"{mod}: {first!r}")
    assert missing == []
