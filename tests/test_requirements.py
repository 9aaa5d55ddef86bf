"""What the README's install gives is enough: every third-party package the library imports (or reads files
from, such as the tokenizer files inside llama-models and mistral-common) is a runtime requirement, not only
a development one."""
import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out.add(_normal(re.split(r"[<>=!~\[; ]", line)[0]))
    return out


def _imported_modules() -> set[str]:
    mods = set()
    for path in (ROOT / "rdpo_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_package_file":
                mods.add(node.args[0].value)  # a package whose data files are read (tokenizer models)
    return mods - set(sys.stdlib_module_names) - {"rdpo_jax"}


def test_every_imported_package_is_a_runtime_requirement():
    runtime = _requirements(ROOT / "requirements.txt")
    providers = importlib.metadata.packages_distributions()
    missing = {m: providers.get(m) for m in _imported_modules()
               if not any(_normal(d) in runtime for d in providers.get(m, [m]))}
    assert not missing, f"imported by rdpo_jax but not in requirements.txt: {missing}"
    assert {"llama-models", "mistral-common"} <= runtime  # load_tokenizer("llama3" | "mistral-v1" | "mistral-v3")
