"""The package's shape: every module imports alone, no import cycle among the top-level imports,
and run.py's first checks need no torch (the measured reason for its function-level imports)."""
import ast
import os
import subprocess
import sys

from conftest import ROOT

PKG = os.path.join(ROOT, "gated_pruning")


def module_names() -> dict:
    """{dotted module name: its file} for every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def top_level_imports(path: str, modules: dict, everywhere: bool = False) -> set:
    """The package's modules that `path` imports when it is imported: its statements outside
    functions and classes (an `if` or a `try` at the top included; `everywhere`: inside
    functions too); a module's parent packages come with it, as Python imports them first."""
    found = set()
    todo = list(ast.parse(open(path).read()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not everywhere:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
        todo.extend(ast.iter_child_nodes(node))
    out = set()
    for name in found:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules}
    return out


def find_cycle(graph: dict) -> list | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_top_level_imports():
    modules = module_names()
    graph = {name: top_level_imports(path, modules) - {name} for name, path in modules.items()}
    assert graph["gated_pruning.launch"] >= {"gated_pruning.config.preflight", "gated_pruning.toolkit"}  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the imports inside functions (run.py's torch-free path) close no cycle either
    graph = {name: top_level_imports(path, modules, everywhere=True) - {name} for name, path in modules.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# One interpreter imports what every module needs from outside the package (torch, Hydra), then
# each module is imported in a child forked from it: alone (no other module of the package loaded
# before it), without paying torch's import once per module.
ALONE = """
import importlib, os, sys, traceback
import hydra, matplotlib, numpy, omegaconf, torch, torchvision
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("failed:", " ".join(failed))
"""


def test_every_module_imports_alone():
    names = sorted(module_names())
    r = subprocess.run([sys.executable, "-c", ALONE, *names], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "failed:", r.stdout + r.stderr[-3000:]


def test_a_typo_is_refused_before_torch_is_imported():
    code = ("import sys\nfrom gated_pruning import launch\ntry:\n    launch.prepare(['gama=1'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert "did you mean gamma?" in r.stderr
