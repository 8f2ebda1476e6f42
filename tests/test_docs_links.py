"""The documentation's relative links resolve: every `[text](path)` and `[text](path#anchor)` in the
README, docs/ and bench/ markdown names a file of the repository, and an anchor names a heading of it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("bench/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # links inside code are not links


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return out


def links(markdown: Path) -> list[str]:
    text = CODE.sub("", markdown.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # not http:, mailto:, ...


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(markdown):
    broken = []
    for target in links(markdown):
        path, _, anchor = target.partition("#")
        dest = (markdown.parent / path).resolve() if path else markdown
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{markdown.relative_to(ROOT)}: broken links {broken}"


def test_the_checker_sees_links(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## Sub part, two\n[ok](a.md#sub-part-two) `[no](x.md)` [web](https://x.y)\n"
                                   "[bad](missing.md) [bad anchor](a.md#nope)\n", encoding="utf-8")
    assert links(tmp_path / "a.md") == ["a.md#sub-part-two", "missing.md", "a.md#nope"]
    assert anchors(tmp_path / "a.md") == {"top", "sub-part-two"}
