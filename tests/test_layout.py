"""The code's layout as the README's map describes it: no import cycles among the modules of
`annotate`, `training` and `rewards` (function-level imports included), the job core importing no
job kind, pipeline or webhook, one module per kind, and a docstring atop every module."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("annotate", "training", "rewards")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that `name` imports, at the top or inside a function."""
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".")
            if node.level:
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["annotate.__fake_a"], GRAPH["annotate.__fake_b"] = {"annotate.__fake_b"}, {"annotate.__fake_a"}
    try:
        assert ["annotate.__fake_a", "annotate.__fake_b"] in _cycles()
    finally:
        del GRAPH["annotate.__fake_a"], GRAPH["annotate.__fake_b"]


def test_no_import_cycles():
    assert _cycles() == []


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_job_core_imports_no_kind_pipeline_or_webhook():
    for core in ("training.jobs", "training.registry", "training.events", "training.tasks"):
        reached = _reachable(core)
        assert not {m for m in reached if m.startswith("training.kinds")}, core
        assert not {"training.listeners", "training.generation", "annotate.webhooks", "annotate.tasks"} & reached, core


def test_each_kind_is_one_module_and_registers_itself():
    from training.kinds import MODULES as KIND_MODULES
    from training.registry import all_kinds

    registered = all_kinds()
    for name in KIND_MODULES:
        assert (REPO / "training" / "kinds" / f"{name}.py").exists()
        assert name in registered and registered[name].name == name


def test_the_annotate_app_imports_nothing_of_training():
    for name in MODULES:
        if name.startswith(("annotate", "rewards")):
            assert not {m for m in GRAPH[name] if m.startswith("training")}, name
        if name.startswith("rewards"):
            source = MODULES[name].read_text(encoding="utf-8")
            assert "import django" not in source and "from django" not in source, name


def test_every_module_says_what_it_owns():
    missing = [str(path.relative_to(REPO)) for path in MODULES.values()
               if path.read_text(encoding="utf-8").strip() and not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert missing == [], f"modules without a docstring: {missing}"
