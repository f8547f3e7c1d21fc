"""The README and docs/ say only what is true about the command line.

Every `healthsync ...` they mention (in running text or in a code block) names
commands and options that exist; every command line in a code block is run,
as written, against the sandbox and a demo store, and must succeed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import click
import pytest
from conftest import REPO

from connector.cli import cli
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAM = re.compile(r"^(?:\.venv/bin/)?healthsync\s")
# `docker ...` lines are not run (no Docker here): tests/test_container.py replays the Dockerfile's
# steps and checks the compose and CronJob files; `bash scripts/test` is what CI runs, and
# `bash scripts/demo` is the install plus `healthsync demo`, which the workplace below runs.


def _blocks(text: str) -> list[str]:
    """The command lines of fenced and indented code blocks, continuation lines joined."""
    lines: list[str] = []
    fenced = False
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            continue
        if fenced or raw.startswith("    "):
            lines.append(raw.strip())
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line
        else:
            joined.append(line)
    return [line for line in joined if line]


def _inline(text: str) -> list[str]:
    return [span for span in re.findall(r"`([^`\n]+)`", text) if PROGRAM.match(span)]


def block_commands() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in _blocks(doc.read_text(encoding="utf-8"))
            if PROGRAM.match(line)]


def mentions() -> list[tuple[str, str]]:
    found = block_commands()
    for doc in DOCS:
        found += [(doc.name, span) for span in _inline(doc.read_text(encoding="utf-8"))]
    return sorted(set(found))


def _words(line: str) -> list[str]:
    line = line.split("  #")[0].split(" > ")[0]
    return line.replace("\\|", "|").split()[1:]


def _resolve(words: list[str]) -> tuple[list[click.Command], list[str]]:
    """The command chain the words name (group first), and every option word they mention."""
    chain: list[click.Command] = [cli]
    options: list[str] = []
    takes_value = {"--db", "--mappings", "--log-format"}
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        bare = word.strip("[]")
        if bare.startswith("-"):
            options += [w.split("=")[0] for w in bare.split("|") if w.startswith("-")]
            skip = bare in takes_value
            continue
        group = chain[-1]
        if isinstance(group, click.Group):
            names = bare.split("|")
            if not bare.isupper():  # not a placeholder (ACCOUNT, N): a subcommand's name
                unknown = [n for n in names if n not in group.commands]
                assert not unknown, f"no command {' '.join(unknown)} in `{group.name}`"
                chain.append(group.commands[names[0]])
    return chain, options


@pytest.mark.parametrize(("doc", "line"), mentions(), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_mentioned_command_and_option_exists(doc, line):
    chain, options = _resolve(_words(line))
    known = {opt for command in chain for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    known |= {"-h", "--help"}
    assert len(chain) > 1 or all(w.startswith("-") for w in _words(line)), f"{doc}: `{line}` names no command"
    missing = [o for o in options if o not in known]
    assert not missing, f"{doc}: `{line}` mentions {missing}, which `{' '.join(c.name or '' for c in chain)}` lacks"


def test_the_docs_show_commands():
    assert len(block_commands()) >= 10 and len(mentions()) >= 40


@pytest.fixture(scope="module")
def workplace(tmp_path_factory):
    """A folder as a new user has it after `bash scripts/demo`: mappings, a demo store, the program."""
    root = tmp_path_factory.mktemp("user")
    shutil.copytree(REPO / "mappings", root / "mappings")
    shutil.copytree(REPO / "mappings", root / "my-mappings")
    for folder in (root / ".venv" / "bin", root / "bin"):
        folder.mkdir(parents=True)
        program = folder / "healthsync"
        program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m connector "$@"\n', encoding="utf-8")
        program.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "200"}
    env.pop("HEALTHSYNC_DB", None)
    made = subprocess.run(["healthsync", "demo", "--accounts", "40"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=180)
    assert made.returncode == 0, made.stderr
    key = re.search(r"explain (\S+)", made.stdout).group(1)
    return root, env, key


@pytest.mark.parametrize(("doc", "line"), block_commands(), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_command_line_in_a_code_block_runs(workplace, doc, line):
    root, env, key = workplace
    command = (line.split("  #")[0].replace("ACCOUNT", key).replace("ACME", key)
               .replace(" DIR", f" {root / 'sf-project'}").replace("[--days 7]", "--days 7"))
    with Sandbox(build_dataset(accounts=40, seed=7, now=datetime.now(UTC))) as sb:
        run_env = {**env, **sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_DB": str(root / "healthsync-demo.db")}
        if " override clear " in command:  # the id the docs show is an example: clear one that exists
            subprocess.run(["healthsync", "override", "set", key, "--status", "Green", "--reason", "docs",
                            "--days", "3"], cwd=root, env=run_env, check=True, capture_output=True)
            listed = subprocess.run(["healthsync", "override", "list", "--json"], cwd=root, env=run_env,
                                    check=True, capture_output=True, text=True).stdout
            newest = json.loads(listed)[0]["id"]
            command = re.sub(r"override clear \d+", f"override clear {newest}", command)
        ran = subprocess.run(["bash", "-c", command], cwd=root, env=run_env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, f"{doc}: `{line}` exited {ran.returncode}:\n{ran.stdout}\n{ran.stderr}"
    assert "Traceback" not in ran.stderr
