"""The layout's rules (docs/ARCHITECTURE.md), read from the source: which package may import
which, and no import circle between files. Function-local imports count; imports under
`if TYPE_CHECKING:` (annotations only) do not."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxseg"
# What each package may import besides itself. Front doors (jaxseg/main.py, every
# __main__.py, jaxseg/__init__.py) may import anything.
ALLOWED = {
    "runtime": set(),
    "kernels": {"runtime"},
    "models": {"runtime", "kernels"},
    "data": {"runtime"},
    "config": {"data"},
    "evaluation": {"runtime", "data"},
    "convert": {"runtime", "models"},
    "export": {"runtime", "models"},
    "sdcnet": {"runtime", "kernels", "models", "convert", "data"},
    "pretrained": {"runtime", "convert", "sdcnet"},
    "inference": {"runtime", "kernels", "models", "data", "config", "evaluation", "export",
                  "pretrained"},
    "train": {"runtime", "kernels", "models", "data", "config", "evaluation", "inference"},
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
  skip = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
  return skip


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """The jaxseg modules `path` imports (`from a import b` -> a.b when b is a module)."""
  tree = ast.parse(path.read_text())
  skip = _type_checking_nodes(tree)
  out = set()
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.split(".")[0] == "jaxseg")
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
        node.module.split(".")[0] == "jaxseg"):
      for alias in node.names:
        name = f"{node.module}.{alias.name}"
        out.add(name if name in modules else node.module)
  return out


def _package(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else ""


def _is_front_door(module: str) -> bool:
  return module in ("jaxseg", "jaxseg.main") or module.endswith(".__main__")


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_every_package_has_its_rule():
  packages = {_package(m) for m in _modules()} - {""}
  assert packages == set(ALLOWED), "add the new package to ALLOWED and docs/ARCHITECTURE.md"


def test_no_import_runs_back_up():
  wrong = []
  for module, imports in _graph().items():
    src = _package(module)
    if _is_front_door(module) or not src:
      continue
    for target in imports:
      dst = _package(target)
      if dst and dst != src and dst not in ALLOWED[src]:
        wrong.append(f"{module} imports {target} ({src} may import {sorted(ALLOWED[src])})")
  assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle_spans_files():
  graph = _graph()
  index, low, stack, on_stack, circles = {}, {}, [], set(), []

  def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in graph:
        continue
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
        circles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  assert not circles, circles


@pytest.mark.parametrize("rule", ["inference", "convert", "sdcnet", "kernels", "export"])
def test_never_imports_train(rule):
  assert "train" not in ALLOWED[rule]
