"""The package's shape (docs/ARCHITECTURE.md, "Layers"): no import circle among mx8's
modules, no module importing another's private names, and the training path loading nothing
of lease mode."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import mx8

PACKAGE = Path(mx8.__file__).resolve().parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path) -> List[ast.ImportFrom]:
    """Imports that run when the module loads (not those inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                out.append(sub)
    return out


def resolve_from(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def graph() -> Dict[str, Set[str]]:
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: Dict[str, Set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in top_level_imports(p):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = resolve_from(m, p.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def test_no_import_circle():
    edges = graph()
    state: Dict[str, int] = {}

    def visit(m: str, path: List[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if m.startswith(t + ".") or t == "mx8":  # a module's own package __init__, loaded first anyway
                continue
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_module_imports_another_modules_private_names():
    bad = []
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("mx8")):
                for a in node.names:
                    if a.name.startswith("_") and a.name != "_core":  # _core: the C extension module
                        bad.append(f"{p.relative_to(PACKAGE)}: from {'.' * node.level}{node.module or ''} "
                                   f"import {a.name}")
    assert not bad, bad


def test_the_training_path_loads_no_lease_mode(packed):
    code = ("import sys, mx8\n"
            f"ds = mx8.Dataset({str(packed)!r}, batch_size=16, size=32)\n"
            "n = sum(len(b.sample_ids) for b in ds)\n"
            "print(n, sorted(m for m in sys.modules if m.startswith('mx8.leases')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n, leases = out.stdout.split(" ", 1)
    assert int(n) > 0 and leases.strip() == "[]", out.stdout
    assert mx8.LeaseDataset.__module__ == "mx8.leases.dataset"  # loaded on first use
