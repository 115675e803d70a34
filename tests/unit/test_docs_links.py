"""The documentation holds together: every relative link in README.md and docs/*.md resolves.

A link `[text](target)` whose target is not a URL must name a file or directory relative to the linking file,
inside the repository; a `#anchor` into a Markdown file (or on its own, into the same file) must be one of that
file's headings, slugged as GitHub does. The README stays short, keeps the two set-up commands and links every
doc. No network; a synthetic document with planted breaks shows the checker can fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 15 * 1024

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
HTML_ANCHOR = re.compile(r"""<a\s+(?:[^>]*\s)?(?:id|name)=["']([^"']+)["']""", re.IGNORECASE)
# [text](target) or ![alt](target), with an optional "title"; the target may be wrapped in <...>.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'][^\"']*[\"'])?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def docs() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed (links inside code are not links)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
                continue
            if marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
                continue
        if fence is None:
            out.append(INLINE_CODE.sub("", line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs (repeats get -1, -2, ...) and explicit <a id>."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        found.update(HTML_ANCHOR.findall(line))
        h = HEADING.match(line)
        if not h:
            continue
        base = slug(h.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    """The targets of every Markdown link and image in `path`'s prose."""
    out: list[str] = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(line):
            target = m.group(1)
            out.append(target[1:-1] if target.startswith("<") and target.endswith(">") else target)
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with `path`'s relative links, one message each; empty when every link resolves."""
    problems: list[str] = []
    root = root.resolve()
    for target in links(path):
        if SCHEME.match(target):  # http(s)://, mailto: and any other URL: not checked here (no network)
            continue
        file_part, _, anchor = target.partition("#")
        if file_part:
            resolved = (path.parent / unquote(file_part)).resolve()
            if not resolved.is_relative_to(root):
                problems.append(f"{path.name}: {target} points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{path.name}: {target} does not exist")
                continue
        else:
            resolved = path
        is_markdown = resolved.is_file() and resolved.suffix.lower() == ".md"
        if anchor and is_markdown and unquote(anchor) not in anchors(resolved):
            problems.append(f"{path.name}: {target}: no heading #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("doc", docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_there_are_docs_to_check() -> None:
    assert len(docs()) > 1


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_keeps_the_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run" in text
    assert "make test" in text


def test_readme_links_every_doc() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if not SCHEME.match(t)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == []


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_each_doc_starts_by_saying_who_it_is_for(doc: Path) -> None:
    lines = [line for line in doc.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1].startswith("For "), f"{doc.name}: the line after the title says who the doc is for"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Deploy (Google Cloud)", "deploy-google-cloud"),
        ("Staying under 2 req/s across the fleet", "staying-under-2-reqs-across-the-fleet"),
        ("The digest, the buttons, `/turma alunos`", "the-digest-the-buttons-turma-alunos"),
        ("How `make test` checks the declaration", "how-make-test-checks-the-declaration"),
        ("IAM: each function holds exactly what its code calls", "iam-each-function-holds-exactly-what-its-code-calls"),
        ("Personal data (PII)", "personal-data-pii"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("A [linked](x.md) heading", "a-linked-heading"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_checker_reports_planted_breaks(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "docs" / "target.md").write_text("# Target\n\n## Real heading\n\n## Real heading\n", encoding="utf-8")
    doc = tmp_path / "docs" / "doc.md"
    doc.write_text(
        "# Doc\n\n## Here\n\n"
        "[ok](target.md) [ok anchor](target.md#real-heading) [repeat](target.md#real-heading-1)\n"
        "[ok dir](../src/) [ok self](#here) [web](https://example.com/x#y) [mail](mailto:a@b.c)\n"
        "[gone](missing.md)\n"
        "[bad anchor](target.md#no-such-heading)\n"
        "[bad self](#nowhere)\n"
        "[escape](../../outside.md)\n"
        "`[in code](missing-in-code.md)`\n"
        "```\n[in fence](missing-in-fence.md)\n# not a heading\n```\n"
        "[fenced heading](#not-a-heading)\n",
        encoding="utf-8",
    )
    problems = broken_links(doc, root=tmp_path)
    assert problems == [
        "doc.md: missing.md does not exist",
        "doc.md: target.md#no-such-heading: no heading #no-such-heading in target.md",
        "doc.md: #nowhere: no heading #nowhere in doc.md",
        "doc.md: ../../outside.md points outside the repository",
        "doc.md: #not-a-heading: no heading #not-a-heading in doc.md",
    ]


def test_checker_passes_a_clean_document(tmp_path: Path) -> None:
    doc = tmp_path / "clean.md"
    doc.write_text("# Clean\n\n## Part one\n\nSee [part one](#part-one) and [me](clean.md).\n", encoding="utf-8")
    assert broken_links(doc, root=tmp_path) == []
