"""The `banditd` command."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from service.version import __version__


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _settings(args: argparse.Namespace, **overrides: object):  # type: ignore[no-untyped-def]
    from service.settings import Settings  # noqa: PLC0415 - keep `banditd version` light

    given = {k: v for k, v in (("host", args.host), ("port", args.port), ("data_dir", args.data_dir)) if v is not None}
    return Settings(**given, **overrides)  # type: ignore[arg-type]


class _Terminated(Exception):
    """SIGTERM arrived; unwinds so that child processes (embedded Redis) are stopped."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _serve(settings) -> None:  # type: ignore[no-untyped-def]
    """Runs the API until SIGTERM or SIGINT; uvicorn drains requests, then this returns."""
    import uvicorn  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    except (_Terminated, KeyboardInterrupt):
        pass  # uvicorn re-raises the signal it shut down for; the shutdown is already done


def cmd_serve(args: argparse.Namespace) -> int:
    """The API alone; needs REDIS_URL."""
    settings = _settings(args)
    if settings.redis_url is None:
        print("banditd serve: REDIS_URL is not set (use `banditd up` for an embedded Redis)", file=sys.stderr)
        return 2
    _serve(settings)
    return 0


@contextlib.contextmanager
def _trainer_process(settings) -> Iterator[subprocess.Popen[bytes]]:  # type: ignore[no-untyped-def]
    """`banditd train` as a child process beside the API, stopped with it."""
    env = os.environ | {"REDIS_URL": settings.redis_url, "BANDIT_DATA_DIR": str(settings.data_dir)}
    if settings.model_store is not None:
        env["BANDIT_MODEL_STORE"] = str(settings.model_store)
    from service.embedded_redis import die_with_parent  # noqa: PLC0415

    command = [sys.executable, "-m", "service.cli", "train"]
    process = subprocess.Popen(command, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509 - one prctl call
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _serve_with_trainer(settings) -> None:  # type: ignore[no-untyped-def]
    with _trainer_process(settings):
        _serve(settings)


def cmd_up(args: argparse.Namespace) -> int:
    """The main job: embedded Redis unless REDIS_URL is set, the trainer, then the API."""
    from service.embedded_redis import EmbeddedRedis  # noqa: PLC0415

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if settings.redis_url is not None:
            _serve_with_trainer(settings)
            return 0
        with EmbeddedRedis(settings.data_dir / "redis") as embedded:
            _serve_with_trainer(_settings(args, redis_url=embedded.url))
    except (_Terminated, KeyboardInterrupt):
        pass
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The background trainer; needs REDIS_URL."""
    from prometheus_client import start_http_server  # noqa: PLC0415

    from training.settings import TrainerSettings  # noqa: PLC0415
    from training.trainer import Trainer  # noqa: PLC0415

    given = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}
    settings = TrainerSettings(**given)  # type: ignore[arg-type]
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.redis_url is None:
        print("banditd train: REDIS_URL is not set", file=sys.stderr)
        return 2
    trainer = Trainer(settings)
    if settings.trainer_metrics_port:
        try:
            start_http_server(settings.trainer_metrics_port, addr="127.0.0.1", registry=trainer.metrics.registry)
        except OSError as error:
            logging.getLogger(__name__).warning(
                "no trainer /metrics on port %d: %s", settings.trainer_metrics_port, error
            )
    signal.signal(signal.SIGTERM, lambda signum, frame: trainer.stop())
    try:
        trainer.run()
    except KeyboardInterrupt:
        pass
    return 0


# -- offline jobs --------------------------------------------------------------------------


class _ProgressBar:
    """training.offline.Progress on stderr: a bar redrawn in place on a terminal, one summary
    line per phase otherwise."""

    WIDTH = 30

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.task, self.done = "", 0
        self.total: int | None = None
        self.started = self.drawn = 0.0

    def start(self, task: str, total: int | None) -> None:
        self.task, self.total, self.done = task, total, 0
        self.started = time.monotonic()
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        rate = f" ({self.done / seconds:,.0f}/s)" if seconds > 0 and self.done else ""
        self._write(f"{self.task}: {self.done:,} in {seconds:.1f} s{rate}\n")

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or (not force and now - self.drawn < 0.1):
            return
        self.drawn = now
        if self.total:
            share = min(1.0, self.done / self.total)
            filled = int(share * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._write(f"{self.task} [{bar}] {share:4.0%} {self.done:,}/{self.total:,}")
        else:
            self._write(f"{self.task} {self.done:,}")

    def _write(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text)
        self.stream.flush()


def _time_ms(text: str) -> int:
    """A time given as Unix milliseconds or ISO 8601 (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is neither milliseconds nor an ISO 8601 time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _offline(args: argparse.Namespace, job: Callable[..., int]) -> int:
    """Runs job(store, log, progress) with the trainer's settings (REDIS_URL, data folder);
    an offline error or an unreachable Redis is one line on stderr and exit status 1."""
    from training.settings import CommonSettings  # noqa: PLC0415

    given = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}
    settings = CommonSettings(**given)  # type: ignore[arg-type]
    if settings.redis_url is None:
        print(f"banditd {args.command}: REDIS_URL is not set", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from eventlog import LogUnavailable  # noqa: PLC0415
    from eventlog.sync import LogClient  # noqa: PLC0415
    from training import offline  # noqa: PLC0415

    log = LogClient(settings.redis_url)
    try:
        return job(settings.store, log, _ProgressBar())
    except offline.OfflineError as error:
        print(f"banditd {args.command}: {error.message}", file=sys.stderr)
    except LogUnavailable as error:
        print(f"banditd {args.command}: Redis at REDIS_URL: {error}", file=sys.stderr)
    finally:
        log.close()
    return 1


def cmd_export_log(args: argparse.Namespace) -> int:
    """The joined log of a policy to Parquet (and DSJSON)."""

    def job(store: Path, log: Any, progress: Any) -> int:
        from training import offline  # noqa: PLC0415 - TensorFlow loads only once the job runs

        joined = offline.read_joined_log(log, args.policy, args.since, args.until, progress)
        joined.to_parquet(args.out)
        written = [str(args.out)]
        if args.dsjson:
            joined.to_dsjson(args.dsjson)
            written.append(str(args.dsjson))
        defaulted = len(joined) - int(joined.rewarded.sum())
        targets = ", ".join(written)
        print(f"{len(joined):,} decisions of {args.policy} ({defaulted:,} with the default reward) -> {targets}")
        return 0

    return _offline(args, job)


def cmd_import_log(args: argparse.Namespace) -> int:
    """Logged data (Parquet, CSV, Open Bandit Dataset CSV) into a policy's log."""

    def job(store: Path, log: Any, progress: Any) -> int:
        from training import offline  # noqa: PLC0415 - TensorFlow loads only once the job runs

        columns = args.context_columns.split(",") if args.context_columns else None
        n = offline.import_log(log, args.policy, args.file, args.format, args.context_prefix, columns, progress)
        print(f"imported {n:,} decisions with rewards into {args.policy}")
        return 0

    return _offline(args, job)


def cmd_retrain(args: argparse.Namespace) -> int:
    """A new candidate version trained on an exported log; never served until promoted."""

    def job(store: Path, log: Any, progress: Any) -> int:
        from training import offline  # noqa: PLC0415 - TensorFlow loads only once the job runs

        joined = offline.JoinedLog.from_parquet(args.log)
        export = offline.retrain(store, log, args.policy, joined, from_live=args.from_live, progress=progress)
        start = f"from {log.live(args.policy)}" if args.from_live else "from scratch"
        print(f"candidate {export}.0 of {args.policy}: trained {start} on {len(joined):,} decisions (not served)")
        return 0

    return _offline(args, job)


def _evaluation_table(result: dict[str, Any]) -> str:
    def cell(e: dict[str, float]) -> str:
        return f"{e['value']:.5f} [{e['low']:.5f}, {e['high']:.5f}]"

    level = f"{1 - result['alpha']:.0%}"
    roles = ["candidate", "live"] + (["baseline"] if "baseline" in result else [])
    titles = {
        "candidate": f"candidate {result['candidate_version']}",
        "live": f"live {result['live_version']}",
        "baseline": "baseline action",
    }
    lines = [
        f"{result['policy']}: {result['examples']:,} decisions ({result['rewarded']:,} rewarded); "
        f"logging policy's value {cell(result['logging_policy'])}",
        "",
        f"| estimator ({level} interval) | " + " | ".join(titles[r] for r in roles) + " |",
        "|---|" + "---:|" * len(roles),
    ]
    for name in result["candidate"]["estimates"]:
        lines.append(f"| {name} | " + " | ".join(cell(result[r]["estimates"][name]) for r in roles) + " |")
    for key in ("effective_sample_size", "max_importance_weight"):
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(f"{result[r][key]:,.1f}" for r in roles) + " |")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The candidate against the live version, off-policy, on an exported log."""

    def job(store: Path, log: Any, progress: Any) -> int:
        from training import offline  # noqa: PLC0415 - TensorFlow loads only once the job runs

        joined = offline.JoinedLog.from_parquet(args.log)
        result = offline.evaluate(store, log, args.policy, joined, greedy=args.greedy, progress=progress)
        auto = args.auto_promote or offline.auto_promote_configured(log, args.policy)
        promoted = offline.promote_if_better(store, log, args.policy, result) if auto else None
        if args.json:
            print(json.dumps(result | {"promoted_version": promoted}, indent=2))
        else:
            print(_evaluation_table(result))
        if auto:
            dr_low, live_dr = result["candidate"]["estimates"]["dr"]["low"], result["live"]["estimates"]["dr"]["value"]
            verdict = f"promoted as {promoted}" if promoted else "not promoted"
            print(f"auto-promote: candidate DR lower bound {dr_low:.5f} vs live DR {live_dr:.5f}: {verdict}")
        return 0

    return _offline(args, job)


def cmd_promote(args: argparse.Namespace) -> int:
    """Serve the candidate (every replica swaps to it; the trainer goes on from it)."""

    def job(store: Path, log: Any, progress: Any) -> int:
        from training import offline  # noqa: PLC0415 - TensorFlow loads only once the job runs

        version = offline.promote(store, log, args.policy, args.version)
        print(f"{args.policy} now serves {version}")
        return 0

    return _offline(args, job)


def _add_offline_commands(sub: Any) -> None:
    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=f"{text} Needs REDIS_URL.")
        p.add_argument("policy", help="policy name")
        p.add_argument("--data-dir", help="data folder (env BANDIT_DATA_DIR, default ./data)")
        p.set_defaults(func=func)
        return p

    p = add("export-log", cmd_export_log, "Write a policy's joined log (one row per decision) to Parquet.")
    p.add_argument("--out", required=True, type=Path, help="Parquet file to write")
    p.add_argument("--dsjson", type=Path, help="also write Vowpal Wabbit's decision-service JSON here")
    p.add_argument("--since", type=_time_ms, help="first decision time: Unix ms or ISO 8601 (default: the start)")
    p.add_argument("--until", type=_time_ms, help="end time, exclusive: Unix ms or ISO 8601 (default: now)")
    p = add("import-log", cmd_import_log, "Append logged data (context, action, propensity, reward) to a policy's log.")
    p.add_argument("file", type=Path, help="Parquet or CSV file (.gz read transparently)")
    p.add_argument("--format", required=True, choices=["parquet", "csv", "obd"], help="obd: Open Bandit Dataset CSV")
    p.add_argument("--context-prefix", default="x", help="context columns <prefix>0, <prefix>1, ... (default x)")
    p.add_argument("--context-columns", help="comma-separated context columns (instead of --context-prefix)")
    p = add("retrain", cmd_retrain, "Train a new candidate version on an exported log (not served until promoted).")
    p.add_argument("log", type=Path, help="a Parquet file written by `banditd export-log`")
    p.add_argument("--from-live", action="store_true", help="start from the live version's variables")
    p = add("evaluate", cmd_evaluate, "Estimate the candidate's and the live version's value off-policy.")
    p.add_argument("log", type=Path, help="a Parquet file written by `banditd export-log`")
    p.add_argument("--auto-promote", action="store_true", help="promote if the candidate's DR lower bound > live DR")
    p.add_argument("--greedy", action="store_true", help="evaluate the greedy policies instead of the collect ones")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON instead of a table")
    p = add("promote", cmd_promote, "Serve the candidate version.")
    p.add_argument("--version", help="promote only if this ('<export>.0') is still the candidate")


def cmd_version(args: argparse.Namespace) -> int:
    print(f"banditd {__version__}")
    return 0


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    signal.signal(signal.SIGTERM, _raise_terminated)
    parser = argparse.ArgumentParser(prog="banditd", description="Contextual-bandit decision service.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("up", cmd_up, "run the service (API, and an embedded Redis unless REDIS_URL is set)"),
        ("serve", cmd_serve, "run the API alone against REDIS_URL"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", help="listen address (env BANDIT_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, help="listen port (env BANDIT_PORT, default 8000)")
        p.add_argument("--data-dir", help="data folder (env BANDIT_DATA_DIR, default ./data)")
        p.set_defaults(func=func)
    p = sub.add_parser("train", help="run the background trainer against REDIS_URL")
    p.add_argument("--data-dir", help="data folder (env BANDIT_DATA_DIR, default ./data)")
    p.set_defaults(func=cmd_train)
    _add_offline_commands(sub)
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
