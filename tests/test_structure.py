"""The package's structure, as a maintainer checks it: no import cycle between vxm_tf's
modules, and private Keras / TensorFlow API only in vxm_tf.compat."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vxm_tf"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name):
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path):
    """The vxm_tf modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vxm_tf")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vxm_tf"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    return {name for name in found if is_module(name)}


def test_no_import_cycles():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        # importing a submodule runs its package's __init__: not a dependency of the module
        graph[name] = {m for m in imports(path) if not name.startswith(m + ".") and m != name
                       and not (m == "vxm_tf")}
    visiting, done, cycles = set(), set(), []

    def visit(node, trail):
        if node in visiting:
            cycles.append(trail[trail.index(node):] + [node])
            return
        if node in done:
            return
        visiting.add(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        visiting.discard(node)
        done.add(node)
    for node in sorted(graph):
        visit(node, [])
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"


PRIVATE = re.compile(r"\._distribute_strategy|\._symbolic_build|tensorflow\.python|"
                     r"object\.__setattr__|\.__dict__")


def test_private_keras_api_only_in_compat():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{n}"
                 for path in PACKAGE.rglob("*.py") if path.name != "compat.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if PRIVATE.search(line)]
    assert not offenders, f"private Keras / TensorFlow API outside vxm_tf.compat: {offenders}"


# a module a reader holds in one sitting; the largest now are below it
MAX_LINES = 360


def test_every_module_reads_in_one_sitting():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_commands_live_in_one_place_and_the_old_module_names_only_run_them():
    """Every console script points into `vxm_tf.commands`; each `python -m vxm_tf.X` module
    kept for it holds nothing but the call."""
    setup = (PACKAGE.parent / "setup.cfg").read_text()
    scripts = dict(re.findall(r"^\s*(vxm-[\w-]+) = ([\w.]+):console$", setup, re.M))
    assert len(scripts) == 8 and all(target.startswith("vxm_tf.commands.")
                                     for target in scripts.values()), scripts
    for target in scripts.values():
        name = target.rsplit(".", 1)[1]
        shim = PACKAGE / ("models/__main__.py" if name == "models" else f"{name}.py")
        code = [n for n in ast.parse(shim.read_text()).body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert all(isinstance(n, (ast.If, ast.ImportFrom)) for n in code), shim
        assert f"from vxm_tf.commands.{name} import console" in shim.read_text(), shim


def test_report_tools_build_tables_one_way():
    """Markdown tables in tools/ come from tools/reporting.py (bench_gpu.py runs on a
    machine without the package, and writes its own)."""
    tools = PACKAGE.parent / "tools"
    by_hand = [path.name for path in tools.glob("*.py")
               if path.name not in ("reporting.py", "bench_gpu.py")
               and re.search(r"\|---|\|-{3,}\|", path.read_text())]
    assert not by_hand, f"tables written by hand: {by_hand}"
