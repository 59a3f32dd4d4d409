"""The documentation: README.md and every docs/**/*.md page.

- every relative link, image and ``<img src>`` points at a file that exists;
- README.md stays a short user's page and links every docs page;
- no page talks about how the work was organised (issue numbers, sessions, lent or borrowed
  machines).

Standard library and pytest only: no torch, no network.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12_000  # "under 12 KB", in bytes as `wc -c` counts them

# Inline links and images: the "](target)" part, with an optional <...> and "title".
_INLINE = re.compile(r"\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
# Reference definitions: "[label]: target".
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
# HTML images and links.
_HTML = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)

#: Words that describe how the work was organised, not the software.
FORBIDDEN = {
    "issue number": re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE),
    "session": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "lent": re.compile(r"\blent\b", re.IGNORECASE),
    "borrowed": re.compile(r"\bborrowed\b", re.IGNORECASE),
}


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []


def all_pages() -> list[Path]:
    return [README, *doc_pages()]


def _blank(text: str) -> str:
    """The same text with every character but newlines replaced by spaces (keeps offsets)."""
    return re.sub(r"[^\n]", " ", text)


def strip_code(text: str) -> str:
    """Blank out fenced code blocks, inline code spans and HTML comments, keeping line numbers.

    Link syntax inside code is not a link, and identifiers in code (``AttriVAESession``,
    ``session.encode(...)``) are not prose.
    """
    text = _HTML_COMMENT.sub(lambda m: _blank(m.group(0)), text)
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                out.append(_blank(line))
                continue
            out.append(_INLINE_CODE.sub(lambda c: _blank(c.group(0)), line))
        else:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
                fence = None
            out.append(_blank(line))
    return "".join(out)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image of a Markdown page, code excluded."""
    text = strip_code(page.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for pattern in (_INLINE, _REFERENCE, _HTML):
        for m in pattern.finditer(text):
            target = m.group(1).strip()
            if target[:1] in "\"'<" and target[-1:] in "\"'>":
                target = target[1:-1].strip()
            found.append((_line_of(text, m.start(1)), target))
    return found


def is_local(target: str) -> bool:
    """False for external URLs (http:, https:, mailto:, …), pure #anchors and empty targets."""
    return bool(target) and not target.startswith("#") and not _SCHEME.match(target) and not target.startswith("//")


def resolve(page: Path, target: str) -> Path:
    """The file a relative link points at: fragment and query removed, %-escapes decoded."""
    path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
    base = ROOT if path.startswith("/") else page.parent
    return (base / path.lstrip("/")).resolve()


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the helpers themselves
def test_link_parser_finds_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [a](a.md#part), ![pic](img/p.png \"title\") and [web](https://example.org).\n"
        "[![badge](b.svg)](c.md) [top](#top) [mail](mailto:x@y.z)\n"
        "`[not](code.md)`\n"
        "```\n[not](fenced.md)\n```\n"
        "<img src=\"d.png\" width=10>\n"
        "[ref]: e.md\n",
        encoding="utf-8",
    )
    targets = [t for _, t in links(page)]
    assert sorted(t for t in targets if is_local(t)) == ["a.md#part", "b.svg", "c.md", "d.png", "e.md", "img/p.png"]
    assert resolve(page, "a.md#part") == (tmp_path / "a.md").resolve()
    assert "code.md" not in targets and "fenced.md" not in targets


def test_forbidden_words_ignore_code_but_not_prose() -> None:
    prose = strip_code("Call `session.encode()` here.\n```python\nsession = AttriVAESession(scene)\n```\n")
    assert not any(p.search(prose) for p in FORBIDDEN.values())
    for text in ("see issue #7", "Issue 12 says", "issues 3", "one session", "a GPU lent to us", "borrowed"):
        assert any(p.search(strip_code(text)) for p in FORBIDDEN.values()), text
    for text in ("excellent", "the lentil", "sessional", "AttriVAESession"):
        assert not any(p.search(strip_code(text)) for p in FORBIDDEN.values()), text


# --------------------------------------------------------------------------- the documentation
def test_docs_exist() -> None:
    assert README.is_file(), "README.md is missing"
    assert doc_pages(), "docs/ has no Markdown pages"


def test_relative_links_resolve() -> None:
    broken = []
    for page in all_pages():
        for line, target in links(page):
            if not is_local(target):
                continue
            path = resolve(page, target)
            if not path.exists():
                broken.append(f"{_rel(page)}:{line}: {target} (no such file: {_rel(path)})")
            elif ROOT not in path.parents and path != ROOT:
                broken.append(f"{_rel(page)}:{line}: {target} (outside the repository)")
    assert not broken, f"{len(broken)} broken link(s):\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size < README_MAX_BYTES, (f"README.md is {size} bytes; keep it under {README_MAX_BYTES} and move "
                                     "details into docs/")


def test_every_docs_page_is_linked_from_readme() -> None:
    linked = {resolve(README, t) for _, t in links(README) if is_local(t)}
    missing = [_rel(p) for p in doc_pages() if p.resolve() not in linked]
    assert not missing, "docs pages not linked from README.md:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", all_pages(), ids=lambda p: _rel(p))
def test_no_words_about_how_the_work_was_organised(page: Path) -> None:
    raw = page.read_text(encoding="utf-8")
    prose = strip_code(raw)
    hits = []
    for name, pattern in FORBIDDEN.items():
        # Issue numbers are never right, not even in code; the words only count in prose.
        text = raw if name == "issue number" else prose
        for m in pattern.finditer(text):
            hits.append(f"{_rel(page)}:{_line_of(text, m.start())}: {m.group(0)!r} ({name})")
    assert not hits, "\n".join(hits)
