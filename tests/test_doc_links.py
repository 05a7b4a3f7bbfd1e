"""The project's READMEs link only to files and headings that exist: a moved file or renamed section
would otherwise leave a new user a dead link."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("kernels/README.md"), *ROOT.glob("results/**/README.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {anchor(line.lstrip("#")) for line in doc.read_text().splitlines() if line.startswith("#")}


def local_links(doc: Path) -> list[str]:
    in_code = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # a code block's brackets are not links
    return [t for t in LINK.findall(in_code) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_local_link_resolves(doc):
    for target in local_links(doc):
        path, _, fragment = target.partition("#")
        where = (doc.parent / path).resolve() if path else doc
        assert where.exists(), f"{doc.relative_to(ROOT)}: {target} does not exist"
        if fragment:
            assert fragment in anchors(where), f"{doc.relative_to(ROOT)}: {target}: no such heading"


def test_the_readmes_are_checked_and_link_to_each_other():
    assert {d.relative_to(ROOT).as_posix() for d in DOCS} >= {"README.md", "kernels/README.md", "results/README.md"}
    assert {"kernels/README.md", "results/README.md", "results/README.md#not-yet-timed"} <= \
        set(local_links(ROOT / "README.md"))
    assert anchor(" Benchmarking: `rnnbench`") == "benchmarking-rnnbench"
