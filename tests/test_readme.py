"""The README's shell blocks, read as a newcomer runs them: word for word, top to bottom.

Each check is a mistake a new user hit: a job id that was never set (every later command then failed
quietly), a key created before the service had built its virtualenv, two spellings of the command,
a spec file that did not exist. The service block itself is run against a real ``make serve`` by
hand when it changes (it trains networks for minutes, too long for the suite).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n### ", start + len(title))
    end = README.find("\n## ", start + len(title)) if end < 0 else end
    return README[start:end]


def _commands(block: str) -> list[str]:
    """The block's command lines, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


def test_one_spelling_of_the_command() -> None:
    """Every glorot invocation in a shell block is ``.venv/bin/glorot`` (the README says once that
    ``source .venv/bin/activate`` makes plain ``glorot`` the same)."""
    for block in _sh_blocks(README):
        for cmd in _commands(block):
            if cmd.startswith("docker "):
                continue  # inside the image, the entry point is glorot itself
            for m in re.finditer(r"(\S*)glorot (?=[a-z])", cmd):
                assert m.group(1).endswith(".venv/bin/"), f"bare glorot in: {cmd}"
    assert "source .venv/bin/activate" in README


def test_service_block_sets_the_job_id_before_using_it() -> None:
    cmds = _commands("\n".join(_sh_blocks(_section("### The service"))))
    first_use = next(i for i, c in enumerate(cmds) if "$ID" in c)
    setters = [i for i, c in enumerate(cmds) if re.match(r"ID=\$\(", c)]
    assert setters and setters[0] < first_use
    setter = cmds[setters[0]]
    # read from the 202's Location header, whatever its capitalisation, without the trailing CR
    assert "curl -si" in setter and "-i '^location:'" in setter and "tr -d '\\r'" in setter


def test_service_block_waits_for_the_service_before_creating_a_key() -> None:
    cmds = _commands("\n".join(_sh_blocks(_section("### The service"))))
    serve = next(i for i, c in enumerate(cmds) if c.startswith("make serve"))
    wait = next(i for i, c in enumerate(cmds) if "/healthz" in c and c.startswith("until "))
    key = next(i for i, c in enumerate(cmds) if "keys create" in c)
    assert serve < wait < key


def test_service_block_exports_the_key_the_cli_reads() -> None:
    cmds = _commands("\n".join(_sh_blocks(_section("### The service"))))
    assert "export GLOROT_API_KEY=$KEY" in cmds


def test_spec_files_named_by_commands_exist() -> None:
    for block in _sh_blocks(README):
        for cmd in _commands(block):
            for word in shlex.split(cmd.replace("$(", " ").replace(")", " ")):
                path = word.removeprefix("@")
                if path.endswith(".json") and not path.startswith("report"):
                    assert (ROOT / path).is_file(), f"{cmd} names {path}, which does not exist"


def test_make_targets_named_by_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    for name in set(re.findall(r"`?make ([a-z]+)", README)):
        assert name in targets, f"make {name}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_the_docs_resolve() -> None:
    """Every relative link of the README (and of docs/) names a file that exists and, with an anchor,
    a heading of that file."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{doc.name}: link to {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                assert anchor in {_slug(h) for h in headings}, f"{doc.name}: link to {target}: no such heading"
