"""The README's curl and CLI examples, run in README order against a live service, so that the
README cannot drift from what the service does.

An example is a fenced ```bash, ```sh or ```console block that calls `curl` or `banditd`. In a
bash/sh block every line is a command (a command may span lines); in a console block the
lines starting with ``$ `` are commands and the lines under one are its output as the README
shows it. Each block runs in one bash (variables set in it carry to its later commands) with
the environment the README tells the reader to set:

- ``BANDITD``: the service's URL (`make up` serves http://127.0.0.1:8000; here a free port);
- ``BANDIT_ADMIN_KEY``: the admin key, and ``KEY``: a key of ``BANDIT_API_KEYS`` (act,
  reward, read), both configured on the service so that every header the examples send is
  checked;
- ``REDIS_URL`` and ``BANDIT_DATA_DIR`` for the offline commands, as for `banditd train`.

The service is `banditd up` (API and trainer, the demo policy created at start-up) against
the session's redis-server; the working folder is a temp dir in which ``tests/`` points at this
repository's (for ``tests/data``). Every command must exit 0; every curl must answer 2xx, or
the status its output line names (``# 422``); an output that is complete JSON (no ``...``)
must equal the answer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import pytest

from service.embedded_redis import free_port
from tests.processes import clean_env, start_banditd, stop, wait_ready

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
ADMIN_KEY = "readme-admin-key-0123456789"
APP_KEY = "readme-app-key-0123456789"

SKIPPED = {
    "banditd serve   [--host H]": "the synopsis of the commands, with placeholders; this test runs `banditd up`",
    "banditd export-log POLICY --out": "the synopsis of the offline jobs, with placeholders; the OBD example runs them",
    "docker build -t banditd": "needs Docker and a base image from a registry this machine cannot reach; "
    "tests/test_layering.py checks the Dockerfile copies every package, the image itself is not built",
}
"""A line of a block that is not run -> why. Each must match exactly one example block."""


class Command(NamedTuple):
    line: int
    """Its first line in README.md (1-based)."""
    text: str
    output: list[str]
    """The lines the README shows under it (console blocks)."""


class Block(NamedTuple):
    line: int
    language: str
    lines: list[str]


def example_blocks(text: str) -> list[Block]:
    """The fenced bash/sh/console blocks that call curl or banditd, in README order."""
    blocks: list[Block] = []
    language: str | None = None
    start, body = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if language is None and line.startswith("```"):
            language, start, body = line[3:].strip(), number, []
        elif language is not None and line.startswith("```"):
            if language in {"bash", "sh", "console"} and re.search(r"\b(curl|banditd) ", "\n".join(body)):
                blocks.append(Block(start + 1, language, body))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote or a trailing backslash: the command goes on
        return False
    return True


def commands(block: Block) -> list[Command]:
    """The block's commands, each with the output lines shown under it."""
    found: list[Command] = []
    pending: list[str] = []
    first = 0
    for offset, line in enumerate(block.lines):
        if pending:
            pending.append(line)
        elif block.language == "console" and not line.startswith("$ "):
            if line.strip() and found:
                found[-1].output.append(line)
            continue
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            pending, first = [line.removeprefix("$ ")], block.line + offset
        if _complete("\n".join(pending)):
            found.append(Command(first, "\n".join(pending), []))
            pending = []
    assert not pending, f"README.md:{first}: unterminated command"
    return found


def expected_status(command: Command) -> int | None:
    """The HTTP status the README names in the command's output (``# 422``), else None (2xx)."""
    for line in command.output:
        if match := re.search(r"#\s*(\d{3})\b", line):
            return int(match.group(1))
    return None


def expected_json(command: Command) -> object | None:
    """The output as JSON if the README shows a complete JSON answer, else None."""
    text = "\n".join(re.sub(r"\s+#.*$", "", line) for line in command.output)
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None


BLOCKS = example_blocks(README)
RUNNABLE = [b for b in BLOCKS if not any(line in text for line in SKIPPED for text in b.lines)]
"""The blocks test_example runs: all but the SKIPPED ones, each of which
test_examples_are_found_and_skips_are_listed shows to exist once, with its reason."""


def test_examples_are_found_and_skips_are_listed() -> None:
    assert len(BLOCKS) >= 10 and len(RUNNABLE) == len(BLOCKS) - len(SKIPPED)
    for line, reason in SKIPPED.items():
        matching = [b for b in BLOCKS if any(line in text for text in b.lines)]
        assert len(matching) == 1, f"SKIPPED {line!r} ({reason}) matches {len(matching)} blocks"
    # An example outside a fenced block would escape this test.
    loose = [line for line in README.splitlines() if re.match(r"\s{4}(\$ )?curl ", line)]
    assert not loose, f"curl examples outside fenced blocks: {loose}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, redis_server: object) -> Iterator[dict[str, str]]:
    """`banditd up` with keys configured; yields the environment the examples run with."""
    import redis  # noqa: PLC0415

    url = redis_server.url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushdb()
    root = tmp_path_factory.mktemp("readme")
    data_dir, work = root / "data", root / "work"
    work.mkdir()
    (work / "tests").symlink_to(REPO / "tests")
    port = free_port()
    log: IO[bytes] = open(root / "banditd.log", "wb")
    process = start_banditd(
        "up", port, data_dir, url, log, BANDIT_DEMO_POLICY="true", BANDIT_ADMIN_KEY=ADMIN_KEY, BANDIT_API_KEYS=APP_KEY
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield clean_env(
            BANDITD=base, BANDIT_ADMIN_KEY=ADMIN_KEY, KEY=APP_KEY, REDIS_URL=url, BANDIT_DATA_DIR=str(data_dir),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", WORK=str(work),
        )  # fmt: skip
    finally:
        stop(process)
        log.close()


CURL = 'curl() { command curl -w "\\n@@status %{http_code}\\n" "$@"; }\n'
"""Every curl of a block prints its HTTP status after its body."""


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"README.md:{b.line}" for b in RUNNABLE])
def test_example(block: Block, service: dict[str, str]) -> None:
    found = commands(block)
    script = CURL + "".join(f"echo '@@begin {i}'\n{c.text}\necho \"@@end {i} $?\"\n" for i, c in enumerate(found))
    run = subprocess.run(
        ["bash", "-c", script],
        cwd=service["WORK"],
        env=service,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    parts = re.split(r"^@@begin (\d+)\n", run.stdout, flags=re.M)
    outputs = {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}
    for i, command in enumerate(found):
        where = f"README.md:{command.line}: {command.text[:200]}"
        assert i in outputs, f"{where}: did not run\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        out = outputs[i]
        ended = re.search(rf"^@@end {i} (\d+)$", out, flags=re.M)
        assert ended and ended.group(1) == "0", f"{where}: exit {ended and ended.group(1)}\n{out}\n{run.stderr[-3000:]}"
        statuses = [int(s) for s in re.findall(r"^@@status (\d{3})$", out, flags=re.M)]
        wanted = expected_status(command)
        for status in statuses:
            assert status == wanted if wanted else 200 <= status < 300, f"{where}: HTTP {status}\n{out}"
        if (shown := expected_json(command)) is not None and statuses:
            body = out.split("\n@@status")[0]
            assert json.loads(body) == shown, f"{where}: the README shows {shown}, the service said {body}"
