"""The package's import rule: imports point down the layers, and no module imports itself back.

    cli -> commands -> experiments (demo, study, bench) -> runner (walt.experiment) -> train -> eval
        -> cascade -> pipeline -> text -> data -> models (autoencoder, denoiser, diffusion) -> checkpoint -> io

Every import in `src/walt` counts, those inside functions too (a lazy import is still a
dependency). A module may import its own package and any lower layer; packages of one layer do
not import each other. There are no import cycles between modules, and no `import_module`
registries or module-level `__getattr__` outside the command table of the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = [  # top to bottom
    ("main", ("walt.__main__",)),
    ("cli", ("walt.cli",)),
    ("commands", ("walt.commands",)),
    ("experiments", ("walt.demo", "walt.study", "walt.bench")),
    ("runner", ("walt.experiment",)),
    ("train", ("walt.train",)),
    ("eval", ("walt.eval",)),
    ("cascade", ("walt.cascade",)),
    ("sampling", ("walt.pipeline",)),
    ("text", ("walt.text",)),
    ("data", ("walt.data",)),
    ("models", ("walt.autoencoder", "walt.denoiser", "walt.diffusion")),
    ("checkpoint", ("walt.checkpoint",)),
    ("io", ("walt", "walt.config", "walt.io", "walt.errors")),
]
COMMAND_TABLE = "walt.commands"  # its __init__ may import the subcommand modules by name


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((SRC / "walt").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str:
    """The walt module an import names: the longest prefix that is a module of the tree."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported walt module, line) of every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(_resolve(a.name), node.lineno) for a in node.names if a.name.split(".")[0] == "walt"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "walt":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.append((full if full in MODULES else _resolve(node.module), node.lineno))
    return sorted(set(found))


def _layer(module: str) -> tuple[int, str]:
    """(rank from the top, the package of LAYERS the module belongs to)."""
    best = None
    for rank, (_, packages) in enumerate(LAYERS):
        for pkg in packages:
            if module == pkg or (pkg != "walt" and module.startswith(pkg + ".")):
                if best is None or len(pkg) > len(best[1]):
                    best = (rank, pkg)
    assert best is not None, f"{module} is in no layer of tests/test_layering.py: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_point_down():
    bad = []
    for module, path in MODULES.items():
        rank, pkg = _layer(module)
        for target, line in _imports(path):
            t_rank, t_pkg = _layer(target)
            if t_pkg == pkg or t_rank > rank:
                continue
            where = "up" if t_rank < rank else "sideways"
            bad.append(f"{path.relative_to(SRC)}:{line} imports {target} ({where}: "
                       f"{LAYERS[rank][0]} -> {LAYERS[t_rank][0]})")
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(p) if t != m} for m, p in MODULES.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_registries_or_lazy_module_attributes():
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        if module != COMMAND_TABLE:
            for node in ast.walk(tree):
                name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
                if name in ("import_module", "__import__"):
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} uses {name}")
        bad += [f"{path.relative_to(SRC)}:{n.lineno} defines a module-level __getattr__" for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    assert not bad, "\n".join(bad)


def test_no_two_modules_share_a_name():
    """A file name says which module it is: `stages` or `config` alone must not need its package to
    tell it apart. A file may share its name with a package only in the command table, where
    `walt X` is `commands/X.py` by design."""
    owners: dict[str, list[str]] = {}
    for module in MODULES:
        package, _, name = module.rpartition(".")
        if MODULES[module].name != "__init__.py" and package != COMMAND_TABLE:
            owners.setdefault(name, []).append(module)
    packages = {m.rpartition(".")[2] for m, p in MODULES.items() if p.name == "__init__.py"}
    shared = {n: ms for n, ms in owners.items() if len(ms) > 1 or n in packages}
    assert not shared, "modules sharing a name: " + "; ".join(f"{n}: {', '.join(ms)}" for n, ms in shared.items())
