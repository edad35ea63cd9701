"""The package's imports run one way: no module imports, directly or through others, a module that imports it.

Every ``import movierec.X`` / ``from movierec.X import ...`` counts, at module level or inside a function (a lazy
import still ties the two modules together; only ``if TYPE_CHECKING:`` blocks are left out, as they never run).
The layers this keeps: the store (``checkpoint``) <- ``serving`` <- ``loading`` <- training, evaluation, the CLI,
the Python API and the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "movierec"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The movierec modules ``path`` imports (a name imported from a package counts as its submodule when it is
    one), outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
            if not subs or len(subs) < len(node.names):
                found.add(node.module)
    return found - {module_name(path)}


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, set(files)) for name, path in files.items()}
    # A package imports what its __init__ imports; a submodule's import of its own package is not a cycle
    # through the package's other submodules unless __init__ imports them.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_finds_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other (one lazily) are a cycle."""
    pkg = tmp_path / "movierec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from movierec import b\n")
    (pkg / "b.py").write_text("def f():\n    from movierec.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from movierec import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    modules = {"movierec", "movierec.a", "movierec.b", "movierec.c"}
    assert imports_of(pkg / "a.py", modules) == {"movierec.b"}
    assert imports_of(pkg / "b.py", modules) == {"movierec.a"}
    assert imports_of(pkg / "c.py", modules) == set()
    try:
        test_no_import_cycles()
    except AssertionError as exc:
        assert "movierec.a -> movierec.b -> movierec.a" in str(exc)
    else:
        raise AssertionError("the cycle a <-> b was not found")


def test_the_numpy_passes_import_no_torch():
    """The modules that answer saved models in numpy (factor models, RBMs, autoencoders, Mult-VAE/DAE) load without
    torch; that answering itself imports none is checked command by command in test_serving.py and
    test_numpy_scorers.py."""
    import subprocess
    import sys

    code = ("import sys; import movierec.serving, movierec.models.forward, movierec.loading; "
            "print(sorted({'torch', 'pandas'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
