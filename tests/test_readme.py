"""The README's shell blocks, read as a newcomer runs them: word for word, top to bottom.

Each check is a mistake a new user hit: a job id that was never set (every later command then failed
quietly), a key created before the service had built its virtualenv, two spellings of the command,
a spec file that did not exist. The service block itself is run against a real ``make serve`` by
hand when it changes (it trains networks for minutes, too long for the suite).
"""

from __future__ import annotations

import importlib.util
import json
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


#: A word of a command that names a file: an optional ``@`` (curl's ``--data @F``, ``-F file=@F``), then a path
#: with one of the extensions the README's commands read or write.
_FILE_WORD = re.compile(r"^(?:[\w-]+=)?@?((?:[\w.-]+/)*[\w.-]+\.(?:json|py|pt2|safetensors|png|html))$")


def _words(cmd: str) -> list[str]:
    return shlex.split(cmd.replace("$(", " ").replace(")", " ").replace("<", " "))


def _save_model_outputs(cmd: str) -> set[str]:
    """The files ``examples/save_model.py [FOLDER]`` writes (its ``FILES``, into FOLDER or my-model/)."""
    spec = importlib.util.spec_from_file_location("save_model", ROOT / "examples" / "save_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    words = _words(cmd)
    after = words[words.index("examples/save_model.py") + 1:]
    folder = after[0] if after and not after[0].startswith("#") else "my-model"
    return {f"{folder}/{name}" for name in module.FILES.values()}


def test_files_named_by_commands_exist_or_were_written_before() -> None:
    """A file a command reads is in the repository or was written by an earlier command of the README
    (``> F``, ``-o F``, ``--html F``, or examples/save_model.py), read top to bottom as one shell."""
    written: set[str] = set()
    for block in _sh_blocks(README):
        for cmd in _commands(block):
            words = _words(cmd)
            outputs = {words[i + 1] for i, w in enumerate(words[:-1]) if w in {">", "-o", "--html"}}
            for word in words:
                m = _FILE_WORD.match(word)
                if not m or m.group(1) in outputs:
                    continue
                path = m.group(1)
                assert (ROOT / path).is_file() or path in written, \
                    f"{cmd} reads {path}, which is neither in the repository nor written by an earlier command"
            written |= outputs
            if "examples/save_model.py" in words:
                written |= _save_model_outputs(cmd)


def _glorot_invocations(cmd: str) -> list[list[str]]:
    """The argument lists of every ``.venv/bin/glorot`` call in a command line (up to its pipe, redirect,
    ``)``, ``;`` or ``&``), with ``$VAR`` standing for a value."""
    out = []
    for m in re.finditer(r"\.venv/bin/glorot ([^|>);&]*)", cmd):
        out.append([re.sub(r"^\$(\w+)$", r"\1", w) for w in shlex.split(m.group(1))])
    return out


def test_every_glorot_command_parses() -> None:
    """Every ``.venv/bin/glorot …`` of a shell block names a subcommand and options the CLI's parser has
    (argparse exits on an unknown command, option or choice)."""
    from glorot_core.cli import build_parser

    parser = build_parser()
    seen = set()
    for block in _sh_blocks(README):
        for cmd in _commands(block):
            for argv in _glorot_invocations(cmd):
                try:
                    args = parser.parse_args(argv)
                except SystemExit:
                    raise AssertionError(f"glorot cannot parse: {cmd}") from None
                assert callable(getattr(args, "func", None)), f"no command runs for: {cmd}"
                seen.add(argv[0])
    assert {"models", "suites", "compare", "submit", "report", "run"} <= seen


def _inline_json(cmd: str) -> list[str]:
    """The JSON documents written inline in a command: ``echo '{…}'`` bodies and ``-F 'metadata={…}'``."""
    return [m.group(1) for m in re.finditer(r"(?:echo |metadata=)'?(\{.*?\})'(?:\s|$)", cmd)]


def test_inline_json_of_the_commands_is_valid() -> None:
    """Every body the README's commands send inline is accepted as the service would check it: preset
    bodies expand and validate as specs (a suite's preset form may add ``seeds``), upload metadata parses."""
    from api.presets import expand_body
    from glorot_core.spec import validate_spec
    from glorot_core.uploads.metadata import parse_metadata

    kinds = set()
    for block in _sh_blocks(README):
        for cmd in _commands(block):
            for text in _inline_json(cmd):
                doc = json.loads(text)
                if "preset" in doc:
                    body = {k: v for k, v in doc.items() if not ("suites submit" in cmd and k == "seeds")}
                    spec = validate_spec(expand_body(body))
                    # a README command ends in seconds: small widths and few updates, whatever the preset's budget
                    assert max(spec.model.hidden) <= 1000 and spec.train.steps <= 1000, cmd
                    kinds.add("suite" if "suites submit" in cmd else "preset")
                else:
                    assert "metadata=" in cmd, f"inline JSON of unknown kind in: {cmd}"
                    parse_metadata(doc)
                    kinds.add("metadata")
    assert kinds == {"preset", "suite", "metadata"}


def test_uploaded_model_spec_is_filled_in_by_the_readme() -> None:
    """The README turns examples/tiny-cnn-uploaded.json into a spec by replacing its placeholder with the
    uploaded model's id, and submits the file it wrote."""
    example = json.loads((ROOT / "examples" / "tiny-cnn-uploaded.json").read_text())
    placeholder = example["model"]["model_id"]
    cmds = _commands("\n".join(_sh_blocks(_section("### Your own network"))))
    fill = next(c for c in cmds if c.startswith("sed ") and "examples/tiny-cnn-uploaded.json" in c)
    assert f's/{placeholder}/$MODEL/' in fill
    target = _words(fill)[_words(fill).index(">") + 1]
    model_set = next(i for i, c in enumerate(cmds) if c.startswith("MODEL=$("))
    submit = next(i for i, c in enumerate(cmds) if f"glorot submit {target}" in c)
    assert model_set < cmds.index(fill) < submit


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
