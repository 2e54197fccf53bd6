"""What the benchmarks in bench/ share: running a benchmark (signals, temp dir, exit code),
small HTTP helpers, the child processes they start (`banditd up` / `banditd serve`, the bare
app) and what goes with every result (source revision, host, JSON file, markdown tables).

redis-server is service.embedded_redis.EmbeddedRedis itself (a context manager), and ports
come from service.embedded_redis.free_port.

A script imports this module as ``from bench import harness`` after putting the repository
first on sys.path, which `python bench/<x>.py` does not do (it puts bench/ there); that
bootstrap has to stay in the script, before this import:

    if (_REPO := str(Path(__file__).resolve().parent.parent)) not in sys.path:
        sys.path.insert(0, _REPO)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from service.embedded_redis import free_port

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
CODE_UNDER_TEST = ("service", "bandits", "exporter", "training")
"""The folders whose uncommitted changes make a result not that of the commit recorded with it."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never leave 127.0.0.1


# -- running a benchmark ---------------------------------------------------------------------------


def quiet_tensorflow() -> None:
    """TensorFlow on the CPU without its start-up chatter; call before tensorflow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt in the main thread.

    The `with` blocks and exit stacks that own the started processes then unwind and stop them.
    SIGINT is set explicitly because a shell starts a background job (`cmd &`) with it ignored.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with main()'s code; on Ctrl-C or SIGTERM (see stop_on_signals) say so and exit 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh temp dir, removed on exit unless keep (then its path is printed at the start)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if keep:
        print(f"temp dir: {path}")
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


SMOKE_RESULTS_DIR = Path(tempfile.gettempdir()) / "banditd-bench-smoke"
"""Where a --smoke run writes its JSON and plots by default: never over bench/results."""


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: Mapping[str, Any]
) -> argparse.Namespace:
    """Parses argv after adding ``--smoke``: tiny sizes, a few seconds, to show the benchmark still
    runs and prints its table (tests/bench/test_smoke.py runs every benchmark so).

    With --smoke, ``smoke`` (destination -> value) replaces the defaults, flags given explicitly
    still win, and a default output under bench/results/ moves to SMOKE_RESULTS_DIR. The figures
    of a smoke run mean nothing; the README's come from runs with the defaults.
    """
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds: checks the benchmark runs")
    args = parser.parse_args(argv)
    if not args.smoke:
        return args
    moved = {
        action.dest: SMOKE_RESULTS_DIR / action.default.name
        for action in parser._actions
        if isinstance(action.default, Path) and action.default.is_relative_to(RESULTS_DIR)
    }
    unknown = set(smoke) - {action.dest for action in parser._actions}
    if unknown:
        raise ValueError(f"smoke settings for unknown arguments: {sorted(unknown)}")
    parser.set_defaults(**(moved | dict(smoke)))
    return parser.parse_args(argv)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """Parses "16x10,64x50" into [(16, 10), (64, 50)]: (context_dim, num_actions) pairs."""
    shapes = []
    for item in text.split(","):
        d, _, k = item.strip().partition("x")
        shapes.append((int(d), int(k)))
    return shapes


# -- HTTP (set-up and checks; each benchmark drives its measured load itself) ------------------------


def http_request(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One JSON request to a server on HOST, bypassing any proxy; returns (status, body)."""
    assert url.startswith(f"http://{HOST}:"), url
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str, timeout: float = 30.0) -> Any:
    """The decoded JSON body of GET url."""
    _, body = http_request("GET", url, timeout=timeout)
    return json.loads(body)


def post_policy(base_url: str, policy: Mapping[str, Any], log: Path | None = None) -> dict[str, Any]:
    """POST /policies (which builds and exports the policy: slow); its answer, or RuntimeError unless 201."""
    status, answer = http_request("POST", f"{base_url}/policies", json.dumps(policy).encode(), timeout=120)
    if status != 201:
        detail = f"\n{tail(log)}" if log is not None else ""
        raise RuntimeError(f"POST /policies: {status} {answer[:500]!r}{detail}")
    result: dict[str, Any] = json.loads(answer)
    return result


def wait_http_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll GET url until it answers 200; RuntimeError (with the log's tail) if process exits first."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}\n{tail(log)}")
        try:
            status, body = http_request("GET", url, timeout=2.0)
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except (OSError, http.client.HTTPException) as error:
            last = repr(error)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s (last: {last})\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- child processes ---------------------------------------------------------------------------------


def venv_tool(name: str) -> str | None:
    """An executable installed next to this Python (the venv's bin/), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def child_env(overrides: Mapping[str, str], *, drop_settings: bool = True) -> dict[str, str]:
    """This process's environment for a child server, with overrides applied last.

    Proxy variables are always dropped (the children only talk to HOST); with drop_settings,
    so are BANDIT_* and REDIS_URL, so that the shell's service settings do not leak in.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not (drop_settings and (k.startswith("BANDIT_") or k == "REDIS_URL"))
    }
    return env | dict(overrides)


class Child:
    """A subprocess in its own session, its output in a log file; stop() ends it and its group."""

    def __init__(
        self,
        command: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 60.0,
    ) -> None:
        self.log, self.stop_signal, self.stop_timeout = log, stop_signal, stop_timeout
        self._log_file = log.open("wb")
        try:
            self.process = subprocess.Popen(
                list(command), stdout=self._log_file, stderr=subprocess.STDOUT, env=dict(env), cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            self._log_file.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_http_ok(self, url: str, timeout: float) -> None:
        """Wait until GET url answers 200 (see wait_http_ok)."""
        wait_http_ok(url, self.process, self.log, timeout)

    def stop(self) -> None:
        """stop_signal, then SIGKILL to the whole group if it has not exited within stop_timeout.

        The group is killed in any case afterwards, for children that outlived their parent.
        """
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(timeout=10)
        self._kill_group()
        self._log_file.close()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class Banditd(Child):
    """`banditd <subcommand> --host HOST --port PORT --data-dir DATA_DIR` (a free port unless given)."""

    def __init__(
        self,
        subcommand: str,
        data_dir: Path,
        log: Path,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 60.0,
    ) -> None:
        executable = venv_tool("banditd")
        if executable is None:
            raise RuntimeError("no banditd executable next to this python or on PATH")
        self.port = port if port is not None else free_port(HOST)
        self.url = f"http://{HOST}:{self.port}"
        command = [executable, subcommand, "--host", HOST, "--port", str(self.port), "--data-dir", str(data_dir)]
        super().__init__(command, log, env, stop_signal=stop_signal, stop_timeout=stop_timeout)

    def __enter__(self) -> Banditd:
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until GET /readyz answers 200."""
        self.wait_http_ok(f"{self.url}/readyz", timeout)


def banditd_up(data_dir: Path, redis_url: str, log: Path, extra_env: Mapping[str, str] | None = None) -> Banditd:
    """`banditd up` (the API and its trainer child) against redis_url, without the demo policy.

    Stopped with SIGTERM: the API drains, then stops its trainer.
    """
    env = child_env(
        {
            "REDIS_URL": redis_url,
            "BANDIT_DEMO_POLICY": "false",
            "BANDIT_TRAINER_METRICS_PORT": "0",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        | dict(extra_env or {})
    )
    return Banditd("up", data_dir, log, env)


def create_policy_in_process(redis_url: str, data_dir: Path, name: str, d: int, k: int) -> None:
    """Creates a LinUCB policy exactly as the service does: the app in process, POST /policies
    (build, export version 1, live pointer "1.0")."""
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    settings = Settings(redis_url=redis_url, data_dir=data_dir, demo_policy=False)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/policies", json={"name": name, "algorithm": "linucb", "context_dim": d, "num_actions": k}
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST /policies: {answer.status_code} {answer.text[:500]}")
        if answer.json()["live_version"] != "1.0":
            raise RuntimeError(f"unexpected live version {answer.json()['live_version']}")


# -- results -------------------------------------------------------------------------------------------


def source_revision(modified_key: str = "code_under_test_modified") -> dict[str, Any]:
    """The commit benchmarked and, under modified_key, whether CODE_UNDER_TEST differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_UNDER_TEST],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": head.stdout.strip(), modified_key: bool(dirty.stdout.strip())}


def host_info(*, with_platform: bool = True, **extra: Any) -> dict[str, Any]:
    """CPU count, platform (unless with_platform is false) and Python version, then extra."""
    host: dict[str, Any] = {"cpus": os.cpu_count()}
    if with_platform:
        host["platform"] = platform.platform()
    return host | {"python": platform.python_version()} | extra


def args_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def markdown_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: the header, the alignment row (one letter a column: "l" ---, "r" ---:)
    and one line per row of cells (already formatted; an empty cell prints as "| |")."""
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} does not fit {len(columns)} columns")
    lines = [_markdown_row(columns), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += [_markdown_row(row) for row in rows]
    return "\n".join(lines)


def _markdown_row(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"


def write_json(path: Path, result: Mapping[str, Any]) -> None:
    """Writes result as indented JSON (anything else as str) and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
