"""The event log's record formats: what a decision and a reward look like in their streams.

Stream entries are flat string fields; vectors are JSON arrays. ``text`` is the one
bytes-to-str helper of everything that reads Redis replies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import orjson

MAX_IMPORTANCE_WEIGHT = 50.0
"""Importance weights of shadow learning are clipped here (bias for bounded variance)."""
MODE_VALUES = ("online", "apprentice")
"""A policy's serving modes (keys.MODES)."""


def text(value: Any) -> str:
    """A Redis reply (bytes or not) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


@dataclasses.dataclass(frozen=True)
class DecisionRecord:
    """One /act decision, exactly as it was served."""

    event_id: str
    ts_ms: int
    policy: str
    version: str
    context: list[float]
    mask: list[bool] | None
    action: int
    propensity: float
    scores: list[float]
    greedy: bool
    unit_id: str | None
    seed: int
    """The per-row RNG seed: with the version it reproduces the decision exactly."""
    experiment: str | None = None
    """The experiment that routed this decision to ``policy``, if any."""
    variant: str | None = None
    variant_probability: float = 1.0
    """Probability with which the experiment chose this variant; ``propensity`` is the
    action's probability under the variant's policy, their product the overall one."""
    shadows: dict[str, dict[str, Any]] | None = None
    """Per shadow policy: its version, its own action and propensity (never served), and its
    probability of the action that was served (the numerator of its importance weight)."""
    session_id: str | None = None
    """The episode this decision is a step of (sequential policies: consecutive decisions of
    a session become transitions)."""
    context_categorical: list[str] | None = None
    """Named contexts: the categorical values in schema order (``context`` holds the numeric
    ones, before normalisation)."""
    candidates: list[str] | None = None
    """Candidate sets: the candidates' ids in request order; ``action`` indexes them and
    ``mask`` is False where a candidate was excluded."""
    action_features: list[list[float]] | np.ndarray | None = None
    """Candidate sets: every candidate's numeric features [K][n_a], packed like ``context``
    (the service passes its float32 array, which orjson writes without a Python list)."""
    action_categorical: list[list[str]] | None = None
    """Candidate sets with named features: every candidate's categorical values [K][m_a]."""
    apprentice: dict[str, Any] | None = None
    """Apprentice mode: ``action`` is the baseline that was served (propensity 1) and this is
    what the policy would have chosen: {action, propensity}."""

    def to_fields(self) -> dict[str, str]:
        return {
            "event_id": self.event_id,
            "ts_ms": str(self.ts_ms),
            "policy": self.policy,
            "version": self.version,
            "context": _json(self.context),
            "mask": "" if self.mask is None else _json(self.mask),
            "action": str(self.action),
            "propensity": repr(float(self.propensity)),
            "scores": _json(self.scores),
            "greedy": "1" if self.greedy else "0",
            "unit_id": self.unit_id or "",
            "seed": str(self.seed),
            "experiment": self.experiment or "",
            "variant": self.variant or "",
            "variant_probability": repr(float(self.variant_probability)),
            "shadows": "" if not self.shadows else _json(self.shadows),
            "session_id": self.session_id or "",
            "context_categorical": _optional_json(self.context_categorical),
            "candidates": _optional_json(self.candidates),
            "action_features": _optional_json(self.action_features),
            "action_categorical": _optional_json(self.action_categorical),
            "apprentice": _optional_json(self.apprentice),
        }

    def for_training(self) -> TrainingDecision:
        """What the trainer's join reads of this decision (TrainingDecision.from_fields without
        the round trip through Redis's fields)."""
        return TrainingDecision(
            event_id=self.event_id,
            ts_ms=self.ts_ms,
            context=list(self.context),
            action=self.action,
            propensity=self.propensity,
            session_id=self.session_id,
            context_categorical=self.context_categorical,
            action_features=None if self.action_features is None else list(self.action_features[self.action]),
            action_categorical=None if self.action_categorical is None else self.action_categorical[self.action],
            apprentice_action=None if self.apprentice is None else self.apprentice["action"],
        )

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> DecisionRecord:
        f = {text(k): text(v) for k, v in fields.items()}
        return cls(
            event_id=f["event_id"],
            ts_ms=int(f["ts_ms"]),
            policy=f["policy"],
            version=f["version"],
            context=orjson.loads(f["context"]),
            mask=orjson.loads(f["mask"]) if f["mask"] else None,
            action=int(f["action"]),
            propensity=float(f["propensity"]),
            scores=orjson.loads(f["scores"]),
            greedy=f["greedy"] == "1",
            unit_id=f["unit_id"] or None,
            seed=int(f["seed"]),
            experiment=f.get("experiment") or None,
            variant=f.get("variant") or None,
            variant_probability=float(f.get("variant_probability", 1.0)),
            shadows=orjson.loads(f["shadows"]) if f.get("shadows") else None,
            session_id=f.get("session_id") or None,
            context_categorical=_optional(f.get("context_categorical")),
            candidates=_optional(f.get("candidates")),
            action_features=_optional(f.get("action_features")),
            action_categorical=_optional(f.get("action_categorical")),
            apprentice=_optional(f.get("apprentice")),
        )


def _optional_json(value: Any) -> str:
    return "" if value is None else _json(value)


def _optional(text: str | bytes | None) -> Any:
    return orjson.loads(text) if text else None


@dataclasses.dataclass(frozen=True, slots=True)
class TrainingDecision:
    """The fields of a DecisionRecord the trainer's join needs, decoded and nothing more."""

    event_id: str
    ts_ms: int
    context: list[float]
    action: int
    propensity: float
    weight: float = 1.0
    """Importance weight of the example for the learner (1 for a policy's own decisions)."""
    session_id: str | None = None
    context_categorical: list[str] | None = None
    action_features: list[float] | None = None
    """Candidate sets: the chosen candidate's numeric features."""
    action_categorical: list[str] | None = None
    """Candidate sets with named features: the chosen candidate's categorical values."""
    apprentice_action: int | None = None
    """Apprentice mode: what the policy would have chosen (``action`` is the served baseline)."""

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes], shadow: str | None = None) -> TrainingDecision:
        """shadow: read the decision for that shadow policy, weighted by its probability of the
        served action over the served propensity (clipped at MAX_IMPORTANCE_WEIGHT)."""
        propensity = float(fields[b"propensity"])
        action = int(fields[b"action"])
        weight = 1.0
        if shadow is not None:
            shadows = orjson.loads(fields.get(b"shadows") or b"{}")
            own = shadows.get(shadow)
            weight = 0.0 if own is None else min(own["served_action_probability"] / propensity, MAX_IMPORTANCE_WEIGHT)
        return cls(
            event_id=fields[b"event_id"].decode(),
            ts_ms=int(fields[b"ts_ms"]),
            context=orjson.loads(fields[b"context"]),
            action=action,
            propensity=propensity,
            weight=weight,
            session_id=(fields.get(b"session_id") or b"").decode() or None,
            context_categorical=_optional(fields.get(b"context_categorical")),
            action_features=_chosen(fields.get(b"action_features"), action),
            action_categorical=_chosen(fields.get(b"action_categorical"), action),
            apprentice_action=orjson.loads(raw)["action"] if (raw := fields.get(b"apprentice")) else None,
        )


def _chosen(text: bytes | None, action: int) -> Any:
    """The chosen candidate's row of a per-candidate JSON list, or None."""
    return orjson.loads(text)[action] if text else None


@dataclasses.dataclass(frozen=True)
class RewardRecord:
    """One /reward call. ``late`` rewards are kept for audit but never learned from."""

    event_id: str
    ts_ms: int
    reward: float
    late: bool
    decision_entry: str = ""
    """Stream entry id of the decision this reward is for (set by the recording script)."""
    sequence: int = 0
    """1 for the event's first reward, 2 for its second, ... (set by the recording script)."""
    terminal: bool = False
    """The episode ended with this reward (sequential policies: no next state to bootstrap from)."""

    def to_fields(self) -> dict[str, str]:
        return {
            "event_id": self.event_id,
            "ts_ms": str(self.ts_ms),
            "reward": repr(float(self.reward)),
            "late": "1" if self.late else "0",
            "terminal": "1" if self.terminal else "0",
            "decision_entry": self.decision_entry,
            "sequence": str(self.sequence),
        }

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> RewardRecord:
        """A record from its fields as str or bytes."""
        return cls.from_raw({_raw(k): _raw(v) for k, v in fields.items()})

    @classmethod
    def from_raw(cls, fields: dict[bytes, bytes]) -> RewardRecord:
        """from_fields for the bytes that redis-py returns, without a text copy of every field."""
        return cls(
            event_id=fields[b"event_id"].decode(),
            ts_ms=int(fields[b"ts_ms"]),
            reward=float(fields[b"reward"]),
            late=fields[b"late"] == b"1",
            terminal=fields.get(b"terminal") == b"1",
            decision_entry=fields[b"decision_entry"].decode(),
            sequence=int(fields[b"sequence"]),
        )


def parse_version(version: str) -> tuple[int, int]:
    """'<export>.<checkpoint>' -> (export, checkpoint); a bare '<export>' is checkpoint 0."""
    export, _, checkpoint = version.partition(".")
    return int(export), int(checkpoint or 0)


def entry_key(entry: str) -> tuple[int, int]:
    """A stream entry id '<ms>-<seq>' as a tuple that sorts like the stream."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def entry_ms(entry: str) -> int:
    """The Redis server time (ms) at which a stream entry was appended."""
    return int(entry.partition("-")[0])
