"""The documentation's examples run, and print what the pages say they print.

Conventions for ``docs/*.md`` (also stated in ``docs/conf.py``):

* Every fenced block whose info string is ``python`` is a complete script.
  It is written to a file in a fresh temporary directory and run there as
  ``sys.executable script.py``, with the directory that holds the mpserver
  package under test first on ``PYTHONPATH``; it must exit with status 0.
  Fragments, shell commands and outputs use other fences (``text``,
  ``console``, ``bash``).
* The line ``<!-- run: python -m mpserver -->`` right before a ``python``
  fence (blank lines may separate them) runs that script as
  ``sys.executable -m mpserver script.py`` instead.
* The line ``<!-- expected-output -->`` right before a fenced block (again
  only blank lines between) makes that block the exact expected stdout of the
  nearest ``python`` block above it on the same page.  Prose may come between
  the script and its output.  HTML comments are invisible on the rendered
  pages.

Tests are parametrized by page and block number (``quickstart.md#2`` is the
page's second ``python`` block), so a failure names the example.  The
Sphinx build (``-W``: warnings are errors) runs when sphinx and myst_parser
are importable.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
import subprocess
import sys
import time

import mpserver
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), 'docs')
PAGES = sorted(glob.glob(os.path.join(DOCS, '*.md')))
# The directory to put on PYTHONPATH so that scripts import the mpserver under test.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))

RUN_MARKER = re.compile(r'<!--\s*run:\s*(.*?)\s*-->')
OUTPUT_MARKER = re.compile(r'<!--\s*expected-output\s*-->')
ANY_MARKER = re.compile(r'<!--\s*(run|expected-output)\b')
FENCE = re.compile(r'^(?P<indent> *)(?P<ticks>`{3,})(?P<info>[^`]*)$')
RUNNERS = {'python -m mpserver': ['-m', 'mpserver']}
#: Wall-clock budget of one example (they are meant to take < 3 s; this only
#: catches hangs).
EXAMPLE_TIMEOUT = 120


@dataclasses.dataclass
class Block:
    info: str
    line: int  # 1-based line of the opening fence
    body: str
    marker: str | None  # the HTML comment right before the fence, if any
    indent: int


@dataclasses.dataclass
class Example:
    page: str
    number: int  # 1-based among the page's python blocks
    line: int
    code: str
    runner: list[str]
    expected: str | None = None
    expected_line: int | None = None

    @property
    def id(self) -> str:
        return f'{self.page}#{self.number}'


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown page, with the marker comment before each."""
    lines = text.splitlines(keepends=True)
    blocks = []
    i = 0
    last_text = None  # last non-blank line outside a fence
    while i < len(lines):
        m = FENCE.match(lines[i].rstrip('\n'))
        if not m:
            if lines[i].strip():
                last_text = lines[i].strip()
            i += 1
            continue
        ticks, info, indent = m['ticks'], m['info'].strip(), len(m['indent'])
        start = i
        body = []
        i += 1
        while i < len(lines):
            close = re.match(r'^ *(`{3,})\s*$', lines[i])
            if close and len(close[1]) >= len(ticks):
                break
            body.append(lines[i][indent:] if lines[i].startswith(' ' * indent) else lines[i])
            i += 1
        else:
            raise AssertionError(f'unclosed fence opened at line {start + 1}')
        marker = last_text if last_text and ANY_MARKER.match(last_text) else None
        blocks.append(Block(info, start + 1, ''.join(body), marker, indent))
        last_text = None
        i += 1
    return blocks


def page_examples(path: str) -> list[Example]:
    name = os.path.basename(path)
    with open(path, encoding='utf-8') as f:
        blocks = parse_blocks(f.read())
    examples: list[Example] = []
    for b in blocks:
        where = f'{name}:{b.line}'
        if b.marker and OUTPUT_MARKER.fullmatch(b.marker):
            assert examples, f'{where}: expected output with no python block before it'
            ex = examples[-1]
            assert ex.expected is None, (
                f'{where}: second expected output for {ex.id} (its first is at line {ex.expected_line})'
            )
            ex.expected, ex.expected_line = b.body, b.line
            continue
        if b.info.split()[:1] == ['python']:
            assert b.info == 'python', f'{where}: use the info string "python" alone, got {b.info!r}'
            assert b.indent == 0, f'{where}: a python example must not be indented'
            runner: list[str] = []
            if b.marker:
                m = RUN_MARKER.fullmatch(b.marker)
                assert m and m[1] in RUNNERS, f'{where}: unknown marker {b.marker!r}'
                runner = RUNNERS[m[1]]
            examples.append(Example(name, len(examples) + 1, b.line, b.body, runner))
        else:
            assert b.marker is None, f'{where}: marker {b.marker!r} before a {b.info or "plain"!r} block'
    return examples


def all_examples() -> list[Example]:
    return [ex for page in PAGES for ex in page_examples(page)]


EXAMPLES = all_examples()


def test_pages_found():
    names = {os.path.basename(p) for p in PAGES}
    assert {
        'index.md',
        'quickstart.md',
        'concepts.md',
        'porting.md',
        'semantics.md',
        'architecture.md',
        'api.md',
    } <= names
    assert len(EXAMPLES) >= 10


def child_env() -> dict:
    env = dict(os.environ)
    # Set by mpserver.install() in a process that ran it; examples start clean.
    for name in ('MPSERVER_INSTALL', 'PYTHONSAFEPATH'):
        env.pop(name, None)
    env['PYTHONPATH'] = os.pathsep.join([HOME, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    return env


@pytest.mark.parametrize('ex', EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_example(ex: Example, tmp_path):
    script = tmp_path / f'{os.path.splitext(ex.page)[0]}_example_{ex.number}.py'
    script.write_text(ex.code, encoding='utf-8')
    where = f'{ex.page} line {ex.line} ({ex.id})'
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *ex.runner, str(script)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, (
        f'{where} exited with {proc.returncode} after {elapsed:.1f} s\n'
        f'--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}'
    )
    if ex.expected is not None:
        assert proc.stdout == ex.expected, (
            f'{where}: stdout differs from the expected output at line {ex.expected_line}\n'
            f'--- stdout\n{proc.stdout}--- expected\n{ex.expected}--- stderr\n{proc.stderr}'
        )


def test_api_reference_covers_all_public_names():
    with open(os.path.join(DOCS, 'api.md'), encoding='utf-8') as f:
        text = f.read()
    documented = set(re.findall(r'^\.\. auto(?:class|function|exception|data)::\s+mpserver\.(\w+)', text, re.M))
    missing = [n for n in mpserver.__all__ if n not in documented]
    assert not missing, f'api.md has no autodoc entry for {missing}'
    unknown = sorted(documented - set(mpserver.__all__))
    assert not unknown, f'api.md documents names that are not in mpserver.__all__: {unknown}'


def test_docs_conventions_self_check():
    """The parser understands markers, outputs and fences as the docstring says."""
    page = (
        'intro\n\n'
        '```python\nprint(1)\n```\n\n'
        'It prints:\n\n'
        '<!-- expected-output -->\n\n'
        '```text\n1\n```\n\n'
        '<!-- run: python -m mpserver -->\n'
        '```python\nprint(2)\n```\n'
        '````markdown\n```python\nnot an example\n```\n````\n'
    )
    blocks = parse_blocks(page)
    assert [b.info for b in blocks] == ['python', 'text', 'python', 'markdown']
    assert blocks[1].marker == '<!-- expected-output -->'
    assert blocks[2].marker == '<!-- run: python -m mpserver -->'
    assert blocks[3].body == '```python\nnot an example\n```\n'


@pytest.mark.skipif(
    importlib.util.find_spec('sphinx') is None or importlib.util.find_spec('myst_parser') is None,
    reason="sphinx and myst-parser are not installed (pip install '.[docs]')",
)
def test_sphinx_build_without_warnings(tmp_path):
    out = tmp_path / 'html'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'sphinx',
            '-W',
            '--keep-going',
            '-q',
            '-b',
            'html',
            '-d',
            str(tmp_path / 'doctrees'),
            DOCS,
            str(out),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f'sphinx-build failed\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}'
    for page in ('index', 'quickstart', 'concepts', 'porting', 'semantics', 'architecture', 'benchmarks', 'api'):
        assert (out / f'{page}.html').is_file(), f'{page}.html was not built'
    api = (out / 'api.html').read_text(encoding='utf-8')
    for name in mpserver.__all__:
        assert f'id="mpserver.{name}"' in api, f'api.html has no entry for mpserver.{name}'
