"""The package's layering and its one-place facts, checked on the source (AST), not by convention:
analysis and data never import the trainer, only the sharding module (and the models' default rules table)
names a mesh axis, role ids are `rdpo_jax.batch.Role`, and the row contract covers every key the data layer
lays out, with its dtype."""
import ast
from pathlib import Path

import numpy as np
import pytest

from rdpo_jax.batch import DTYPES, INDEX_KEYS, NUM_ROLES, PAIR_KEYS, ROW_KEYS, UNUSED, Role, pad_rows
from rdpo_jax.sharding import MESH_AXES

PACKAGE = Path(__file__).resolve().parents[1] / "rdpo_jax"
MODULES = {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _rel(p: Path) -> str:
    return p.relative_to(PACKAGE.parent).as_posix()


def _imports(tree: ast.AST, path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), relative ones resolved."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module) if x)
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("layer", ["analysis", "data"])
def test_analysis_and_data_never_import_the_trainer(layer):
    offenders = {_rel(p): sorted(m for m in _imports(t, p) if m.startswith("rdpo_jax.train"))
                 for p, t in MODULES.items() if _rel(p).startswith(f"rdpo_jax/{layer}/")}
    assert {k: v for k, v in offenders.items() if v} == {}


def _mesh_axis_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals that name a mesh axis: any "fsdp" / "tensor", and "data" where it sits beside another
    axis name (a tuple, list or call arguments) or is looked up in a mesh (``mesh*.get("data")``)."""
    distinctive = set(MESH_AXES) - {"data"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in distinctive:
            found.append((node.lineno, node.value))
        groups = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            groups.append(node.elts)
        if isinstance(node, ast.Call):
            groups.append(node.args)
            func = node.func
            receiver = getattr(func, "value", None)
            if getattr(func, "attr", None) == "get" and "mesh" in ast.unparse(receiver).lower():
                found += [(a.lineno, a.value) for a in node.args[:1]
                          if isinstance(a, ast.Constant) and a.value in MESH_AXES]
        for elts in groups:
            names = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in MESH_AXES]
            if "data" in names and len(names) > 1:
                found.append((elts[0].lineno, "data"))
    return found


def test_only_the_sharding_module_names_a_mesh_axis():
    allowed = {"rdpo_jax/sharding.py", "rdpo_jax/models/partitioning.py"}  # the latter: its default rules table
    offenders = {_rel(p): found for p, t in MODULES.items() if _rel(p) not in allowed
                 and (found := _mesh_axis_literals(t))}
    assert offenders == {}
    rules_table = MODULES[PACKAGE / "models" / "partitioning.py"]
    lines = {line for line, _ in _mesh_axis_literals(rules_table)}
    tables = [n for n in ast.walk(rules_table) if isinstance(n, ast.AnnAssign)
              and getattr(n.target, "id", "") in ("DEFAULT_RULES", "ACTIVATION_RULES")]  # parameters', activations'
    assert len(tables) == 2
    assert lines and all(any(t.lineno <= line <= t.end_lineno for t in tables) for line in lines)


def test_the_detector_sees_a_mesh_axis():
    """The check above can fail: it finds each way a module could name an axis."""
    code = 'P("fsdp")\nways = mesh_shape.get("data", 1)\nBATCH = ("data", "fsdp")\nx = {"data": 1}\n'
    assert sorted({line for line, _ in _mesh_axis_literals(ast.parse(code))}) == [1, 2, 3]


def test_roles_and_contract():
    assert [int(r) for r in Role] == [0, 1, 2] and NUM_ROLES == 3 and UNUSED == -1
    assert not set(ROW_KEYS) & set(PAIR_KEYS) and not set(PAIR_KEYS) & set(INDEX_KEYS)


def test_the_contract_covers_every_key_the_data_layer_lays_out():
    from rdpo_jax.data import (
        Buckets,
        SyntheticTask,
        packed_batch,
        synthetic_tokenizer,
        three_row_batch,
        tokenize_examples,
    )

    tok = synthetic_tokenizer()
    rows = tokenize_examples(SyntheticTask().examples(5, seed=0), tok, rationale_template="conversational").rows
    kw = dict(buckets=Buckets((32, 64, 128)), global_batch_size=6, pad_id=0, with_rationale=True,
              dataset_index=[7, 3, 2, 9, 4])
    for batch in (three_row_batch(rows, **kw), packed_batch(rows, **kw)):
        for key, value in batch.items():
            if key == "n_packed_rows":
                continue
            assert key in DTYPES, key
            assert value.dtype == DTYPES[key], (key, value.dtype)
        assert set(np.unique(batch["slot_role"])) <= {UNUSED, *map(int, Role)}
        assert batch["dataset_index"].tolist() == [7, 3, 2, 9, 4, UNUSED]
        assert batch["example_index"].tolist() == [r.index for r in rows] + [UNUSED]


def test_pad_rows_pads_tokens_slots_and_tree_masks_with_the_contract_values():
    batch = {"input_ids": np.ones((1, 2), np.int32), "loss_mask": np.ones((1, 2), bool),
             "slot_pair": np.zeros((1, 1), np.int32), "attn_mask": np.ones((1, 2, 2), bool),
             "pair_mask": np.ones(3, bool)}
    out = pad_rows(batch, n_rows=2, length=3, n_slots=2, pad_id=9)
    assert out["input_ids"].tolist() == [[1, 1, 9], [9, 9, 9]]
    assert out["loss_mask"].tolist() == [[True, True, False], [False] * 3]
    assert out["slot_pair"].tolist() == [[0, -1], [-1, -1]]
    assert out["attn_mask"][0].tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert out["attn_mask"][1].tolist() == np.eye(3, dtype=bool).tolist()  # a padding row sees itself only
    assert out["pair_mask"] is batch["pair_mask"]
    stacked = pad_rows({k: v[None] for k, v in batch.items() if k != "pair_mask"}, n_rows=2, length=3, n_slots=2,
                       pad_id=9, row_axis=1)
    assert all(np.array_equal(stacked[k][0], out[k]) for k in stacked)
    with pytest.raises(ValueError, match="does not fit"):
        pad_rows(batch, n_rows=2, length=1, n_slots=2, pad_id=0)


CITING = [p for d in ("rdpo_jax", "tests", "benchmarks", "launch", "configs")
          for p in sorted((PACKAGE.parent / d).rglob("*")) if p.suffix in (".py", ".yaml", ".md")
          and p != Path(__file__).resolve()]  # this file names the patterns it looks for


def test_every_cited_document_is_in_the_repository():
    """Docstrings and comments cite docs/ pages (and docs/spec.md sections) that exist, never notes outside
    the repository."""
    import re

    root = PACKAGE.parent
    spec = (root / "docs" / "spec.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", spec, re.M))
    missing, outside = [], []
    for p in CITING:
        text = p.read_text()
        for page in re.findall(r"\bdocs/([\w-]+\.md)", text):
            if not (root / "docs" / page).exists():
                missing.append(f"{p.relative_to(root)}: docs/{page}")
        for n in re.findall(r"docs/spec\.md,? sections? (\d+)", text):
            if n not in sections:
                missing.append(f"{p.relative_to(root)}: docs/spec.md section {n}")
        if re.search(r"(?<!docs/)\bspec\.md|\b(information|paper|peers|wave2-corrections)\.md|shared/reference", text):
            outside.append(str(p.relative_to(root)))
    assert missing == [] and outside == []
