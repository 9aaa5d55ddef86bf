"""README examples run as written and print what the README shows (blocks that need a hub model run on a
small stand-in: the tiny rationale model in tests/data)."""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
STAND_IN = ROOT / "tests" / "data" / "rationale_model"


def _block(marker: str) -> tuple[str, str | None]:
    """(the python block containing ``marker``, the plain output block right after it, if any)."""
    blocks = list(re.finditer(r"```(\w*)\n(.*?)```", README, re.S))
    for i, m in enumerate(blocks):
        if m.group(1) == "python" and marker in m.group(2):
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            between = README[m.end():nxt.start()] if nxt else ""
            shown = nxt.group(2) if nxt is not None and nxt.group(1) == "" and not between.strip() else None
            return m.group(2), shown
    raise AssertionError(f"no python block with {marker!r} in the README")


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    return out.getvalue()


def test_generation_example_runs_on_a_stand_in_model():
    code, _ = _block("from rdpo_jax.models import load_hf, generate")
    assert 'path = "checkpoints/llama-3.2-1b-instruct"' in code
    printed = _run(code.replace('"checkpoints/llama-3.2-1b-instruct"', repr(str(STAND_IN))))
    decoded = eval(printed.strip().splitlines()[-1])  # the printed list of decoded responses
    assert isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(t, str) for t in decoded)


def test_data_format_example_prints_what_it_shows():
    code, shown = _block("examples, report = load_preferences(rows[:1])")
    assert shown is not None and _run(code) == shown


def test_analysis_example_prints_what_it_shows():
    code, shown = _block("from rdpo_jax import analysis as an")
    assert shown is not None and _run(code) == shown
