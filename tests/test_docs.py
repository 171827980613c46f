"""The documentation stays true to the code: the config reference is what the config classes
say, and every relative link in README.md and docs/*.md leads somewhere."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def _script():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- config reference


def test_config_reference_is_generated_from_the_config_classes():
    """docs/config.md is exactly what scripts/config_reference.py writes from the code now:
    change a field or its docstring and forget to regenerate, and this fails."""
    expected = _script().render()
    assert (REPO / "docs" / "config.md").read_text() == expected, \
        "docs/config.md is out of date: run .venv/bin/python scripts/config_reference.py"


def test_every_config_field_is_in_the_reference():
    from jmem.config import Config

    text = (REPO / "docs" / "config.md").read_text()
    hints = typing.get_type_hints(Config)
    for section, cls in hints.items():
        if not dataclasses.is_dataclass(cls):
            assert f"| `{section}` |" in text, section
            continue
        assert f"## {section}" in text, section
        for field in dataclasses.fields(cls):
            assert f"| `{section}.{field.name}` |" in text, f"{section}.{field.name}"


def test_field_entries_parse_shared_and_inline_entries():
    script = _script()

    @dataclasses.dataclass
    class Example:
        """What it is. Not an entry: a sentence with a colon.

        alpha, beta: shared text
          over two lines.
        gamma: first; delta: second, inline.
        """

        alpha: int = 1
        beta: float = 0.5
        gamma: tuple = ()
        delta: str = ""

    intro, entries = script.field_entries(Example)
    assert intro == "What it is. Not an entry: a sentence with a colon."
    assert entries == {"alpha": "shared text over two lines.", "beta": "shared text over two lines.",
                       "gamma": "first", "delta": "second, inline."}
    lines = script.section_table("x.", Example)
    assert "| `x.gamma` | list of numbers | (empty) | first |" in lines
    assert '| `x.delta` | str | `""` | second, inline. |' in lines


def test_a_field_without_an_entry_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        """Nothing here describes the field."""

        lonely: int = 0

    with pytest.raises(SystemExit, match="lonely"):
        _script().section_table("", Undocumented)


# ----------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are examples)."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown file (repeats get GitHub's ``-1``, ``-2`` suffixes)."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file does not exist, or whose ``#anchor`` is no
    heading of that file."""
    bad = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            bad.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {linked.name}")
    return bad


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text("# A heading (`with code`)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#a-heading-with-code) [ok](other.md#twice-1) "
                    "[web](https://example.com/x) ![img](missing.png) [bad](other.md#nope) "
                    "`[code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n[self](#local)\n")
    assert broken_links(page) == ["missing.png: no such file", "other.md#nope: no heading #nope in other.md",
                                  "#local: no heading #local in page.md"]


def test_every_doc_is_listed_in_the_docs_index():
    index = (REPO / "docs" / "README.md").read_text()
    for path in (REPO / "docs").glob("*.md"):
        if path.name != "README.md":
            assert f"]({path.name})" in index, path.name


def test_license_and_citation_match_the_package():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a pointer to it
    citation = (REPO / "CITATION.cff").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert "cff-version: 1.2.0" in citation and "license: Apache-2.0" in citation
    assert f"version: {version}" in citation


# ----------------------------------------------------------------------------- README


def test_readme_is_short_and_its_results_table_is_the_committed_verdicts():
    """A newcomer's page (at most 12 KB), whose results rows are exactly what
    scripts/results_table.py reads from experiments/results/*/verdict.txt."""
    module = _results_table()
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    expected = module.rows()
    assert len(expected) >= 4  # digits and MNIST-1D, both protocols
    table = [line for line in readme.splitlines() if line.startswith("| ") and "](experiments/results/" in line]
    assert table == expected, "README's results table is stale: run scripts/results_table.py"


def test_results_table_reads_every_verdict_form():
    from_line = _results_table().PROTOCOL_LINE.match
    estimable = from_line("  corrected (rate 0.95, fractional score; 89 / 93 removed): −0.66 pp [−1.67, 0.36] "
                          "(on this test set and selection, seeds only: [−0.82, −0.50]): no change detected (a cost)")
    assert estimable["estimate"] == "−0.66" and estimable["removed"] == "89 / 93"
    assert _results_table().short_answer(estimable["answer"]) == "no change detected"
    blocked = from_line("  corrected (rate 0.95, fractional score, leakage-free test set): not estimable: selects no "
                        "example in pool 0")
    assert blocked["estimate"] is None and blocked["removed"] is None
    assert blocked["answer"].startswith("not estimable")
    assert _results_table().short_answer("inconclusive: reliability: Jaccard 0.669, needs >= 0.7 (fix: more)") \
        == "inconclusive: reliability"


def _results_table():
    spec = importlib.util.spec_from_file_location("results_table", REPO / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
