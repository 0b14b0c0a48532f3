"""The shape of the package: module sizes, the import graph, layers pointing one way, lazy extras.

The import graph is read from the source with ``ast`` (every ``import`` statement, also those
inside functions), so a cycle or a wrong-way import is caught even when import order hides it.
"""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import gradlab
from conftest import ROOT

PACKAGE = ROOT / "gradlab"
MAX_LINES = 400

# Internal modules: helpers and machinery, importable but not part of the documented API.
INTERNAL = {
    "gradlab.batch", "gradlab.checks", "gradlab.rng", "gradlab.broadcast", "gradlab.frames",
    "gradlab.problems", "gradlab.labcheck", "gradlab.es.fastpath", "gradlab.backprop.engine",
    "gradlab.backprop.losses", "gradlab.widgets_smoothing", "gradlab.widgets_graph",
}
# Exact gradients and shared helpers: they must not import any estimator (directly or not).
LOWER_LAYERS = {
    "gradlab.autograd", "gradlab.nn", "gradlab.backprop", "gradlab.backprop.engine", "gradlab.backprop.losses",
    "gradlab.broadcast", "gradlab.params", "gradlab.checks", "gradlab.batch", "gradlab.rng", "gradlab.compare",
}
ESTIMATOR_MODULES = {
    "gradlab.finite_diff", "gradlab.expectation", "gradlab.estimator", "gradlab.distributions", "gradlab.score",
    "gradlab.pathwise", "gradlab.measure_valued", "gradlab.control_variates", "gradlab.discrete",
    "gradlab.relax", "gradlab.latent", "gradlab.blackbox", "gradlab.dv",
}
# Loaded on first use only: never by `import gradlab`.
LAZY_MODULES = {"gradlab.explore", "gradlab.explore_graph", "gradlab.widgets", "gradlab.widgets_smoothing",
                "gradlab.widgets_graph", "gradlab.frames", "gradlab.dv"}
HEAVY_EXTRAS = ("ipywidgets", "matplotlib", "IPython", "tqdm", "torch.distributed")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def aliases() -> dict[str, str]:
    """Old module paths kept as aliases (``sys.modules`` entries named after another module)."""
    return {name: mod.__name__ for name, mod in list(sys.modules.items())
            if name.startswith("gradlab.") and getattr(mod, "__name__", name) != name}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, *, top_level_only: bool = False):
    """``(imported module, imported names)`` for every import statement of one module."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    known, alias = modules(), aliases()
    for node in nodes:
        if isinstance(node, ast.Import):
            for item in node.names:
                yield alias.get(item.name, item.name), []
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            target = alias.get(target, target)
            plain = []
            for item in node.names:  # `from . import x` imports the module gradlab.x
                sub = alias.get(f"{target}.{item.name}", f"{target}.{item.name}")
                if sub in known:
                    yield sub, []
                else:
                    plain.append(item.name)
            if plain or not node.names:
                yield target, plain


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {t for t, _ in imports_of(name, path) if t in known and t != name}
        # importing a submodule runs its parent packages first: not an edge of this module's own
        edges[name] = {t for t in targets if not name.startswith(t + ".") and t != "gradlab"}
    return edges


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_is_over_the_line_budget():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_import_graph_has_no_cycle():
    edges = graph()
    cycles = sorted(name for name in edges if name in reachable(name, edges))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_cycle_check_can_fail():
    edges = graph()
    edges["gradlab.checks"] = edges["gradlab.checks"] | {"gradlab.batch"}  # batch imports checks
    assert "gradlab.checks" in reachable("gradlab.checks", edges)


def test_no_private_name_is_imported_across_modules():
    offences = []
    for name, path in modules().items():
        for target, names in imports_of(name, path):
            if target.startswith("gradlab"):
                offences += [f"{name}: from {target} import {n}" for n in names
                             if n.startswith("_") and not n.startswith("__")]
    assert not offences, "a helper imported under a private name lives in the wrong place: " + "; ".join(offences)


@pytest.mark.parametrize("lower", sorted(LOWER_LAYERS))
def test_exact_gradients_and_helpers_know_no_estimator(lower):
    edges = graph()
    wrong = sorted(m for m in reachable(lower, edges)
                   if m in ESTIMATOR_MODULES or m.startswith("gradlab.es") or m in LAZY_MODULES)
    assert not wrong, f"{lower} imports (directly or not) the estimator modules {wrong}"


def test_the_es_fast_path_does_not_import_the_nn_layers():
    assert "gradlab.nn" not in reachable("gradlab.es.fastpath", graph())


def test_no_internal_module_is_public():
    public_modules = {getattr(gradlab, n).__name__ for n in gradlab.__all__
                      if n in vars(gradlab) and inspect.ismodule(vars(gradlab)[n])}
    assert not public_modules & INTERNAL, f"internal modules in gradlab.__all__: {public_modules & INTERNAL}"
    assert not {n for n in gradlab.__all__ if n.startswith("es_") and n not in ("es_grad", "es_grad_model")}


def test_all_is_grouped_by_chapter_and_every_name_resolves():
    chapters = [title for title, _ in gradlab.__chapters__]
    assert chapters[:3] == ["Exact gradients", "Finite differences and forward gradients", "Evolution strategies"]
    assert chapters[-2:] == ["Explorers", "Helpers"]
    names = [n for _, group in gradlab.__chapters__ for n in group]
    assert gradlab.__all__ == ["__version__", *names] and len(set(names)) == len(names)


def test_one_estimator_registry_is_called_estimators():
    holders = [name for name, path in modules().items()
               if any(isinstance(node, (ast.Assign, ast.AnnAssign)) and "ESTIMATORS" in
                      [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                       if isinstance(t, ast.Name)]
                      for node in ast.parse(path.read_text()).body)]
    assert holders == ["gradlab.estimator"], f"modules defining a registry named ESTIMATORS: {holders}"


def test_import_gradlab_loads_no_widgets_plotting_or_distributed_code():
    code = (
        "import sys, torch; before = set(sys.modules); import gradlab; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}).stdout.split()
    heavy = [m for m in loaded if m.split(".")[0] in ("ipywidgets", "matplotlib", "IPython")]
    assert not heavy, f"import gradlab loaded {heavy}"
    assert not LAZY_MODULES & set(loaded), f"import gradlab loaded {sorted(LAZY_MODULES & set(loaded))}"
    # torch itself may load tqdm and torch.distributed; gradlab's eagerly loaded modules must not
    known = modules()
    eager = [m for m in loaded if m in known]
    offences = [f"{m} imports {t}" for m in eager for t, _ in imports_of(m, known[m], top_level_only=True)
                if t.startswith(HEAVY_EXTRAS)]
    assert eager and not offences, f"eager module-level imports of optional extras: {offences}"


def test_lazy_names_load_on_first_use():
    code = "import gradlab, sys; gradlab.GradientExplorer; print('gradlab.widgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}).stdout
    assert out.strip() == "True"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gradlab.no_such_name  # noqa: B018


def test_old_module_paths_are_aliases_of_the_es_subpackage():
    import gradlab.es_distributed
    import gradlab.es_point
    import gradlab.noise
    from gradlab.es_autograd import ZeroOrderModule
    from gradlab.es_population import es_grad_model

    assert gradlab.es_point is gradlab.es.point and gradlab.noise is gradlab.es.noise
    assert gradlab.es_distributed is gradlab.es.distributed
    assert es_grad_model is gradlab.es.es_grad_model is gradlab.es_grad_model
    assert ZeroOrderModule is gradlab.ZeroOrderModule is gradlab.nn.ZeroOrderModule
    assert gradlab.NoiseTable is gradlab.es.noise.NoiseTable


def test_every_subpackage_is_packaged():
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert found <= declared, f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - declared)}"
