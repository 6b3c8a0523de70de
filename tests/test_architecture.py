"""The import rules of the layout, read from the source with an AST walk (lazy imports inside functions included).

Units are the top-level packages. Allowed dependencies (a DAG, so no import circle between packages):

    physics, contract        nothing of the project (pure array code; the job contract)
    models                   physics
    workers                  physics, models, contract      (never cli/, service/, devtools/, bench/)
    service                  contract                       (never physics/, models/, workers/: starts without torch)
    devtools                 physics, models, workers, contract
    bench                    physics, models, workers, devtools, contract
    cli                      everything; bench only in cli/cmd_evaluate.py, only bench.evaluation (run_evaluation)

The checker itself is tested on a small fake tree, so a rule that stopped seeing imports would fail here too.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("physics", "contract", "models", "workers", "service", "devtools", "bench", "cli")
ALLOWED = {
    "physics": set(),
    "contract": set(),
    "models": {"physics"},
    "workers": {"physics", "models", "contract"},
    "service": {"contract"},
    "devtools": {"physics", "models", "workers", "contract"},
    "bench": {"physics", "models", "workers", "devtools", "contract"},
    "cli": {"physics", "models", "workers", "service", "devtools", "contract", "bench"},
}
CLI_TO_BENCH = {("cli.cmd_evaluate", "bench.evaluation")}  # the one CLI command that runs the evaluation
# The one shared leaf: the InputError family (standard library only), so every layer raises the same bad-input
# errors; contract/ (and so service/) may import it and nothing else of physics/.
SHARED_LEAF = "physics.errors"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> list[str]:
    """Absolute names of every module imported anywhere in the file (relative imports resolved)."""
    mod = module_name(root, path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append(name)
            out += [f"{name}.{alias.name}" for alias in node.names]  # `from pkg import module`
    return out


def package_edges(root: Path, packages=PACKAGES) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(importing package, imported package) -> {(module, imported name)} for imports between packages."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            mod = module_name(root, path)
            for name in imports_of(root, path):
                top = name.split(".")[0]
                if top in packages and top != pkg:
                    edges.setdefault((pkg, top), set()).add((mod, name))
    return edges


def violations(root: Path, allowed=ALLOWED, cli_to_bench=CLI_TO_BENCH) -> list[str]:
    """Every import that breaks a rule, as 'module imports name (why)'."""
    out = []
    for (src, dst), found in sorted(package_edges(root, tuple(allowed)).items()):
        for mod, name in sorted(found):
            if name == SHARED_LEAF or name.startswith(SHARED_LEAF + "."):
                continue
            if dst not in allowed[src]:
                out.append(f"{mod} imports {name} ({src}/ may not import {dst}/)")
            elif (src, dst) == ("cli", "bench") and not any(
                    mod == m and (name == b or name.startswith(b + ".")) for m, b in cli_to_bench):
                out.append(f"{mod} imports {name} (cli/ reaches bench/ only through "
                           f"{', '.join(f'{m} -> {b}' for m, b in sorted(cli_to_bench))})")
    return out


def cycles(edges) -> list[list[str]]:
    """Circles in the package graph (depth-first search), each as [a, b, ..., a]."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_import_rules_hold_in_the_source():
    assert violations(REPO) == []


def test_no_import_circle_between_packages():
    edges = package_edges(REPO)
    assert cycles(edges) == [], {k: sorted(v)[:3] for k, v in edges.items()}
    # the walk sees the real layering (guards against a walk that finds nothing)
    assert ("workers", "physics") in edges and ("service", "contract") in edges and ("cli", "service") in edges
    assert ("cli", "bench") in edges and ("workers", "contract") in edges


def test_the_checker_finds_violations_and_circles(tmp_path):
    files = {
        "physics/__init__.py": "",
        "physics/core.py": "def f():\n    from workers.pipeline import run  # lazy import: still seen\n",
        "workers/__init__.py": "",
        "workers/pipeline.py": "from physics import core\nfrom ..cli import main\n",
        "cli/__init__.py": "",
        "cli/main.py": "import workers.pipeline\nfrom bench import cnn_eval\n",
        "cli/cmd_evaluate.py": "from bench.evaluation import run_evaluation\n",
        "bench/__init__.py": "",
        "bench/cnn_eval.py": "",
        "bench/evaluation.py": "",
        "service/__init__.py": "",
        "service/app.py": "import contract.jobs\nfrom models import unet\n",
        "contract/__init__.py": "",
        "contract/jobs.py": "",
        "models/__init__.py": "",
        "models/unet.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    allowed = {k: v for k, v in ALLOWED.items() if k not in ("devtools",)}
    found = violations(tmp_path, allowed)
    assert "physics.core imports workers.pipeline (physics/ may not import workers/)" in found
    assert "workers.pipeline imports cli.main (workers/ may not import cli/)" in found
    assert "service.app imports models (service/ may not import models/)" in found
    assert any(v.startswith("cli.main imports bench (cli/ reaches bench/ only through") for v in found)
    assert not any(v.startswith("cli.cmd_evaluate") for v in found)
    assert not any("contract" in v for v in found)
    circles = cycles(package_edges(tmp_path, tuple(allowed)))
    assert ["cli", "workers", "cli"] in circles or ["workers", "cli", "workers"] in circles
    assert any(c[0] == c[-1] and {"physics", "workers"} <= set(c) for c in circles)
