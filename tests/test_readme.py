"""The README documents every setting (one place per fact: the Settings class)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from training.settings import TrainerSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in set(Settings.model_fields) | set(TrainerSettings.model_fields):
        variable = "REDIS_URL" if name == "redis_url" else f"BANDIT_{name.upper()}"
        assert f"`{variable}`" in README, variable


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in README and "make test" in ci
