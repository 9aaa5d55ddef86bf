"""Every ```python block of README.md and docs/*.md runs as written, and prints what the page shows.

* The blocks of one page run in order in one namespace (a later block may use what an earlier one made),
  in a fresh temporary directory that links the repository's ``configs/`` and ``tests/`` (so relative paths
  such as ``configs/tiny_rdpo.yaml`` and ``tests/data/rationale_model`` work as they do at the repo root).
* A block followed directly by a plain ``` block (nothing but blank lines between) must print exactly that
  block's text.
* Paths of hub models in a block are replaced by a small stand-in, the tiny rationale model in
  ``tests/data/rationale_model`` (``STAND_INS``); every entry of ``STAND_INS`` must be used somewhere.
* A block that cannot run here (it needs the hub, a GPU, a TPU pod) is marked, visibly and uniformly, by a
  line ``<!-- not run: REASON -->`` right before its opening fence, REASON one of ``REASONS``. Every other
  python block runs; there is no third kind.

``python tests/test_docs_examples.py [PAGE ...]`` runs pages outside pytest (with the same 8 simulated CPU
devices as the suite), printing each block's time: handy while writing docs.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STAND_IN = ROOT / "tests" / "data" / "rationale_model"
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))
#: Why a python block may be left unrun; the marker is ``<!-- not run: REASON -->`` before the fence.
REASONS = ("needs the hub", "needs a GPU", "needs a TPU pod", "needs a bucket")
#: Literal text in a block -> what the test runs instead (hub checkpoints -> the tiny stand-in model).
STAND_INS = {
    '"path/to/Llama-3.2-1B"': repr(str(STAND_IN)),
    '"path/to/Mistral-7B-v0.1"': repr(str(STAND_IN)),
    '"path/to/Llama-3.1-8B"': repr(str(STAND_IN)),
    '"path/to/Llama-3.2-1B-Instruct"': repr(str(STAND_IN)),
}
MAX_README_LINES = 250

_FENCE = re.compile(r"^(\s*)```(\S*).*$")
_MARK = re.compile(r"^<!-- not run: (.+?) -->$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None = None  # the marker's reason
    shown: str | None = None  # the plain output block right after it


def parse(page: str) -> list[Block]:
    lines = (ROOT / page).read_text().splitlines()
    blocks: list[Block] = []
    ends: list[int] = []  # line index of each block's closing fence
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page}:{i + 1}: unclosed code fence")
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j]]
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = _MARK.match(lines[k].strip()) if k >= 0 else None
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n", mark.group(1) if mark else None))
        ends.append(j)
        i = j + 1
    for n in range(len(blocks) - 1):
        a, b = blocks[n], blocks[n + 1]
        between = lines[ends[n] + 1:b.line - 1]
        if a.lang == "python" and b.lang == "" and not any(s.strip() for s in between):
            a.shown = b.code
    return blocks


def substitute(code: str) -> tuple[str, list[str]]:
    used = [k for k in STAND_INS if k in code]
    for k in used:
        code = code.replace(k, STAND_INS[k])
    return code, used


def run_page(page: str, workdir: Path, *, verbose: bool = False) -> list[str]:
    """Runs every unmarked python block of ``page`` in ``workdir``; returns the STAND_INS keys used."""
    for name in ("configs", "tests"):
        if not (workdir / name).exists():
            (workdir / name).symlink_to(ROOT / name)
    namespace = {"__name__": "__docs__"}
    used: list[str] = []
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for b in parse(page):
            if b.lang != "python" or b.not_run is not None:
                continue
            code, keys = substitute(b.code)
            used += keys
            out = io.StringIO()
            start = time.perf_counter()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(code, f"{page}:{b.line}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{page}:{b.line}: the example raised {type(e).__name__}: {e}") from e
            if verbose:
                print(f"{page}:{b.line}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            if b.shown is not None:
                assert out.getvalue() == b.shown, (
                    f"{page}:{b.line}: the example printed\n{out.getvalue()}\nbut the page shows\n{b.shown}")
    finally:
        os.chdir(old)
    return used


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run_and_print_what_they_show(page, tmp_path):
    run_page(page, tmp_path)


def test_every_python_block_runs_or_is_marked_with_a_known_reason():
    """Marked blocks say why, with one of REASONS; an unmarked block is one the page test ran. A marker in
    front of anything but a python block is a mistake (it would hide nothing)."""
    for page in PAGES:
        for b in parse(page):
            if b.not_run is None:
                continue
            assert b.lang == "python", f"{page}:{b.line}: a not-run marker before a {b.lang or 'plain'} block"
            assert b.not_run in REASONS, f"{page}:{b.line}: reason {b.not_run!r} is not one of {REASONS}"
            assert b.shown is None, f"{page}:{b.line}: a block that is not run cannot show its output"


def test_every_stand_in_is_used():
    used = set()
    for page in PAGES:
        for b in parse(page):
            if b.lang == "python" and b.not_run is None:
                used |= set(substitute(b.code)[1])
    assert used == set(STAND_INS), f"unused STAND_INS entries: {sorted(set(STAND_INS) - used)}"


def test_links_point_into_the_repository():
    """Relative links resolve to files of the repository; nothing cites the workspace outside it."""
    link = re.compile(r"\]\(([^)#\s]*)(?:#([^)]*))?\)")
    for page in PAGES:
        text = (ROOT / page).read_text()
        outside = re.search(r"(?<![/\w])(\.\./)*shared/", text)  # the workspace's shared/ (not /mnt/shared/)
        assert outside is None, f"{page} cites a file outside the repository: ...{text[outside.start():][:40]}"
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S))
        for target, anchor in link.findall(prose):
            if re.match(r"[a-z]+://", target):
                continue
            path = ((ROOT / page).parent / target).resolve() if target else ROOT / page
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else None
            assert rel is not None, f"{page}: link {target} leaves the repository"
            assert path.exists(), f"{page}: link {target} points to no file"
            if anchor and path.suffix == ".md" and path.exists():
                assert anchor in _anchors(path), f"{page}: link {target}#{anchor}: no such heading in {rel}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces -> hyphens)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.M | re.S)
    heads = re.findall(r"^#+\s+(.*?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail to docs/ (at most {MAX_README_LINES})"


if __name__ == "__main__":
    import tempfile

    import tests.conftest  # noqa: F401  (8 simulated CPU devices, offline hub, as in the suite)

    for p in sys.argv[1:] or PAGES:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_page(p, Path(d), verbose=True)
            print(f"{p}: ok in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _output_after(marker: str) -> str:
    """The plain block that follows the README paragraph ending in ``marker``."""
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(marker) + r"\s*```\n(.*?)```", text, re.S)
    assert m, f"README: no output block after {marker!r}"
    return m.group(1).rstrip("\n")


def _same_table(printed: str, shown: str, last_digit: float) -> bool:
    """Token by token equal, except numbers with a decimal point, which may differ by ``last_digit``."""
    a, b = printed.split(), shown.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x != y and not (re.fullmatch(r"-?\d+\.\d+", x) and re.fullmatch(r"-?\d+\.\d+", y)
                           and abs(float(x) - float(y)) <= last_digit + 1e-9):
            return False
    return True


def test_readme_shows_what_rdpo_jax_tiny_fast_prints(tiny_default):
    """The README's ``rdpo-jax tiny --fast`` table (printed on one CPU device) is this session's run of it
    (the fixture trains exactly that run, on 8 simulated devices: float sums in another order may move a
    margin's last printed digit, nothing else)."""
    from rdpo_jax.tiny import format_table

    shown = _output_after("from the order of float sums):")
    printed = format_table(tiny_default[1])
    assert _same_table(printed, shown, last_digit=0.003), f"printed:\n{printed}\nREADME:\n{shown}"
    assert not _same_table(printed.replace("128", "127", 1), shown, last_digit=0.003)  # counts must match


@pytest.mark.slow
def test_readme_shows_what_rdpo_jax_tiny_prints(tmp_path):
    """The full ``rdpo-jax tiny`` table (about 5 minutes on 2 cores: only with RDPO_JAX_FULL=1; CI runs the
    fast form above)."""
    if os.environ.get("RDPO_JAX_FULL") != "1":
        pytest.skip("the full tiny run: set RDPO_JAX_FULL=1 (the fast form is checked in every run)")
    from rdpo_jax.tiny import format_table, run_tiny

    assert format_table(run_tiny(tmp_path / "tiny")) == _output_after("count for neither side):")
