"""The `banditd` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

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
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "train"], env=env)
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
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
