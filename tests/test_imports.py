"""The modules' dependencies run one way (docs/decisions.md, "Helpers every app uses live in
`common/`"): `common` imports no app, and no module imports one that imports it back, not
even lazily inside a function. Read from the source, so a circle fails here before it
fails in some import order at run time."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "filesync", "exports", "project")
APPS = ("filesync", "exports", "project")


def project_modules() -> dict[str, tuple[Path, bool]]:
    """Each module's dotted name -> (its file, whether it is a package's __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Every dotted name the module imports, anywhere in it; `from a import b` gives both
    `a` and `a.b`, since b may be a module."""
    base = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                package = base
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                source = f"{package}.{source}" if source else package
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, is_package) in modules.items():
        targets = {owner(name) for name in imported_names(path, module, is_package)}
        graph[module] = {target for target in targets if target and target != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while (member := stack.pop()) != node:
                        component.append(member)
                        on_stack.discard(member)
                    on_stack.discard(node)
                    if component:
                        found.append(sorted([node, *component]))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert circles(import_graph()) == []


def test_common_imports_no_app():
    graph = import_graph()
    borrowed = {
        module: sorted(target for target in targets if target.split(".")[0] in APPS)
        for module, targets in graph.items()
        if module.split(".")[0] == "common"
    }
    assert {module: targets for module, targets in borrowed.items() if targets} == {}
    assert "common.http" in borrowed and "common.api.parsers" in borrowed  # it saw them


def test_a_circle_is_found_even_inside_a_function(tmp_path):
    """The check itself: a lazy import back is a circle, a one-way chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    lazy = tmp_path / "probe.py"
    lazy.write_text("def later():\n    from ..admin import jobs\n")
    names = imported_names(lazy, "exports.api.probe", is_package=False)
    assert {"exports.admin", "exports.admin.jobs"} <= names
