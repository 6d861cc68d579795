"""Import circles in harness/: the graph of every `import` in its modules (at the top or inside a
function: a lazy import still ties the two modules together), read with `ast`, its circles found as
strongly connected components (SciPy). No circle is allowed: the few imports that still close one
are listed in KNOWN_BACK_EDGES, each with its reason; any other circle fails, and so does a listed
import that no longer exists (take it off the list)."""
from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "harness"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports: `import a.b`, `from a import b` (b a module,
    else a itself) and relative imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_cycles(root: Path = ROOT, leave_out: Collection[tuple[str, str]] = ()) -> list[list[str]]:
    """Each import circle: the modules of a strongly connected component of more than one module
    (the imports `leave_out`, (importer, imported), left out)."""
    modules = module_names(root)
    names = list(modules)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a in names for b in imported(a, modules[a], modules) if (a, b) not in leave_out]
    rows, cols = np.array(edges, int).reshape(-1, 2).T
    graph = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=True, connection="strong")
    groups = [[names[i] for i in np.flatnonzero(labels == label)] for label in np.unique(labels)]
    return sorted(group for group in groups if len(group) > 1)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: a circle through an import inside a function, and one through a relative
    import, are found; a one-way import is not a circle."""
    files = {"__init__.py": "", "a.py": "def f():\n    from harness import b\n", "b.py": "from .a import f\n",
             "c.py": "import harness.a\n", "sub/__init__.py": "", "sub/d.py": "from ..sub import e\n",
             "sub/e.py": "from harness.sub.d import x\n"}
    for name, text in files.items():
        (tmp_path / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / name).write_text(text)
    assert import_cycles(tmp_path) == [["harness.a", "harness.b"], ["harness.sub.d", "harness.sub.e"]]


#: Imports that close the circles still in harness/ (importer, imported): what each needs to go.
KNOWN_BACK_EDGES: dict[tuple[str, str], str] = {}


def test_no_import_circle_but_the_known_ones():
    """Without the known back edges the graph has no circle: a new circle anywhere in harness/ fails
    (the metrics package, controls <-> runner and the models' backends / keras_guided / wrapper have
    none left); a known edge that is gone must leave the list."""
    modules = module_names()
    gone = [(a, b) for a, b in KNOWN_BACK_EDGES if a not in modules or b not in imported(a, modules[a], modules)]
    assert not gone, f"no longer imported, take off KNOWN_BACK_EDGES: {gone}"
    assert import_cycles(leave_out=KNOWN_BACK_EDGES) == []
