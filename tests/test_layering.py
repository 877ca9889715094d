"""The layering rules of docs/architecture.md, checked by walking every import (function-level ones too):
no import cycle among Relay's modules, `rl/` and `rewards/` never import `envs/`, and no private name
(`_x`) is imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rl", "rewards", "envs")
NEVER_IMPORT_ENVS = ("rl", "rewards")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the given top-level packages."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``rl.x.f`` -> ``rl.x``), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]):
    """(line, imported module as written, resolved internal module or None, imported names) per import."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, _known(alias.name, modules), []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                if submodule in modules:  # `from rl import cluster`: the module rl.cluster
                    yield node.lineno, submodule, submodule, []
                else:
                    yield node.lineno, base, _known(base, modules), [alias.name]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layering_problems(root: Path, packages=PACKAGES) -> list[str]:
    """Every violation of the three rules under ``root``, each naming file:line."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for module, path in modules.items():
        where = path.relative_to(root)
        for line, written, target, names in imports_of(module, path, modules):
            if module.split(".")[0] in NEVER_IMPORT_ENVS and written.split(".")[0] == "envs":
                problem = f"{where}:{line}: {module} imports {written}; rl/ and rewards/ never import envs/"
                if problem not in problems:  # once per import statement, not per imported name
                    problems.append(problem)
            if target is None or target == module:
                continue
            graph[module].add(target)
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(
                        f"{where}:{line}: {module} imports the private name {name} from {target}; "
                        "make it public where it lives, or move it to the module that needs it"
                    )
    problems += [f"import cycle: {' <-> '.join(c)}" for c in _cycles(graph)]
    return problems


def test_relay_keeps_its_layering_rules():
    problems = layering_problems(REPO)
    assert problems == [], "\n".join(problems)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_lazy_cycle_an_envs_import_and_a_private_name(tmp_path):
    root = _tree(
        tmp_path,
        {
            "rl/__init__.py": "",
            "rl/run.py": "def go():\n    from rl.learner import _helper\n",
            "rl/learner.py": "from rl import run\n\ndef _helper():\n    pass\n",
            "rl/clean.py": "import os\nfrom rl.learner import __doc__\n",
            "rewards/__init__.py": "",
            "rewards/score.py": "def f():\n    import envs.data\n    from envs.data import x, y\n",
            "envs/__init__.py": "",
            "envs/data.py": "from rewards.score import f\nfrom . import other\nfrom .other import _ok_in_envs\n",
            "envs/other.py": "_ok_in_envs = 1\n",
        },
    )
    problems = layering_problems(root)
    assert problems == [
        "rl/run.py:2: rl.run imports the private name _helper from rl.learner; make it public where it lives, "
        "or move it to the module that needs it",
        "rewards/score.py:2: rewards.score imports envs.data; rl/ and rewards/ never import envs/",
        "rewards/score.py:3: rewards.score imports envs.data; rl/ and rewards/ never import envs/",
        "envs/data.py:3: envs.data imports the private name _ok_in_envs from envs.other; make it public where "
        "it lives, or move it to the module that needs it",
        "import cycle: envs.data <-> rewards.score",
        "import cycle: rl.learner <-> rl.run",
    ]


def test_the_checker_passes_a_clean_tree(tmp_path):
    root = _tree(
        tmp_path,
        {
            "rl/__init__.py": "",
            "rl/a.py": "import json\nfrom rl import b\nfrom rl.b import public\n",
            "rl/b.py": "def public():\n    def _inner():\n        pass\n",
            "envs/__init__.py": "",
            "envs/e.py": "from rl.a import b\nimport rewards\n",
        },
    )
    assert layering_problems(root) == []
