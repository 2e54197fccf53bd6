"""The event log's Redis key names and record formats: the one place both writer and reader use.

Keys (``{p}`` is a policy name, ``{e}`` an event id):

    banditd:policies                 hash  name -> PolicySpec JSON
    banditd:live                     hash  name -> live version ("<export>" or "<export>.<checkpoint>")
    banditd:policy:{p}:decisions     stream of DecisionRecord
    banditd:policy:{p}:rewards       stream of RewardRecord
    banditd:policy:{p}:stats         hash  decisions, rewards, late_rewards, duplicate_rewards
    banditd:event:{e}                hash  what /reward needs to validate a reward and what
                                           /act needs to answer a repeated event id; expires
                                           wait_seconds + margin after the decision
    banditd:modes                    hash  name -> serving mode: "online" or "apprentice"
    banditd:candidates               hash  name -> candidate version ("<export>.0") written by
                                           an offline retrain, served only once promoted

Stream entries are flat string fields; vectors are JSON arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import orjson

PREFIX = "banditd"
MAX_IMPORTANCE_WEIGHT = 50.0
"""Importance weights of shadow learning are clipped here (bias for bounded variance)."""
POLICIES = f"{PREFIX}:policies"
LIVE = f"{PREFIX}:live"
CANDIDATES = f"{PREFIX}:candidates"
MODES = f"{PREFIX}:modes"
MODE_VALUES = ("online", "apprentice")


def decisions_key(policy: str) -> str:
    return f"{PREFIX}:policy:{policy}:decisions"


def rewards_key(policy: str) -> str:
    return f"{PREFIX}:policy:{policy}:rewards"


def stats_key(policy: str) -> str:
    return f"{PREFIX}:policy:{policy}:stats"


def event_key(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> DecisionRecord:
        f = {_text(k): _text(v) for k, v in fields.items()}
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
        f = {_text(k): _text(v) for k, v in fields.items()}
        return cls(
            event_id=f["event_id"],
            ts_ms=int(f["ts_ms"]),
            reward=float(f["reward"]),
            late=f["late"] == "1",
            terminal=f.get("terminal") == "1",
            decision_entry=f["decision_entry"],
            sequence=int(f["sequence"]),
        )

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


# Fields of the per-event hash (event_key).
EVENT_POLICY = "policy"
EVENT_TS_MS = "ts_ms"
EVENT_RESPONSE = "response"
EVENT_REWARDS = "rewards"
EVENT_ENTRY = "entry"  # the decision's stream entry id
EVENT_EXPERIMENT = "experiment"
EVENT_VARIANT = "variant"
EVENT_SPOOLED = "spooled:"  # + a spooled reward's token -> its sequence (a replay writes it once)

# Fields of the per-policy stats hash (stats_key).
STAT_DECISIONS = "decisions"
STAT_REWARDS = "rewards"
STAT_LATE = "late_rewards"
STAT_DUPLICATE = "duplicate_rewards"


# Lua that records a batch of decisions of one policy, skipping event ids already known.
# KEYS: decisions_key, stats_key, then the event_key of every row
# ARGV: policy, ts_ms, ttl_ms, F (fields per record), the positions (1-based) of the
#       experiment and variant fields, the F field names, then per row its response JSON and
#       its F field values
# Returns per row 1 when recorded, or {policy, response} of the earlier decision with that id.
RECORD_DECISIONS_LUA = f"""
local policy, ts, ttl, nfields = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local exp_at, variant_at = tonumber(ARGV[5]), tonumber(ARGV[6])
local replies = {{}}
local recorded = 0
local at = 7 + nfields
for row = 3, #KEYS do
  local existing = redis.call('HMGET', KEYS[row], '{EVENT_POLICY}', '{EVENT_RESPONSE}')
  if existing[2] then
    replies[#replies + 1] = {{existing[1], existing[2]}}
  else
    local fields = {{}}
    for i = 1, nfields do
      fields[2 * i - 1] = ARGV[6 + i]
      fields[2 * i] = ARGV[at + i]
    end
    local entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('HSET', KEYS[row], '{EVENT_POLICY}', policy, '{EVENT_TS_MS}', ts, '{EVENT_RESPONSE}', ARGV[at],
               '{EVENT_REWARDS}', 0, '{EVENT_ENTRY}', entry)
    if ARGV[at + exp_at] ~= '' then
      redis.call('HSET', KEYS[row], '{EVENT_EXPERIMENT}', ARGV[at + exp_at], '{EVENT_VARIANT}', ARGV[at + variant_at])
    end
    redis.call('PEXPIRE', KEYS[row], ttl)
    recorded = recorded + 1
    replies[#replies + 1] = 1
  end
  at = at + 1 + nfields
end
if recorded > 0 then redis.call('HINCRBY', KEYS[2], '{STAT_DECISIONS}', recorded) end
return replies
"""

# Lua that records one reward for a known event, numbering it; the first in-time reward of
# an experiment's decision also counts in that experiment's per-variant reward statistics.
# KEYS: event_key, rewards_key, stats_key, experiment_stats_key (or any key when none)
# ARGV: late ("1"/"0"), aggregation, token ("" or a spooled reward's unique token: a second
#       call with the same token writes nothing and returns the first one's sequence), then
#       the RewardRecord fields as name, value, ... ending with decision_entry and sequence
#       (their values are filled in here).
# Returns the reward's sequence number, or -1 when the event is unknown.
RECORD_REWARD_LUA = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local token = ARGV[3] ~= '' and ('{EVENT_SPOOLED}' .. ARGV[3]) or nil
if token then
  local seen = redis.call('HGET', KEYS[1], token)
  if seen then return tonumber(seen) end
end
local sequence = redis.call('HINCRBY', KEYS[1], '{EVENT_REWARDS}', 1)
if token then redis.call('HSET', KEYS[1], token, sequence) end
local fields = {{unpack(ARGV, 4)}}
fields[#fields - 2] = redis.call('HGET', KEYS[1], '{EVENT_ENTRY}')
fields[#fields] = tostring(sequence)
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HINCRBY', KEYS[3], '{STAT_REWARDS}', 1)
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[3], '{STAT_LATE}', 1)
elseif ARGV[2] == 'earliest' and sequence > 1 then
  redis.call('HINCRBY', KEYS[3], '{STAT_DUPLICATE}', 1)
end
local variant = redis.call('HGET', KEYS[1], '{EVENT_VARIANT}')
if variant and ARGV[1] ~= '1' and sequence == 1 then
  local reward = tonumber(fields[6])
  redis.call('HINCRBY', KEYS[4], variant .. ':n', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], variant .. ':sum', reward)
  redis.call('HINCRBYFLOAT', KEYS[4], variant .. ':sumsq', reward * reward)
end
return sequence
"""


# -- experiments ----------------------------------------------------------------------

EXPERIMENTS = f"{PREFIX}:experiments"
"""hash: experiment name -> its definition (JSON)."""


def experiment_changes_key(experiment: str) -> str:
    """list: every change of an experiment (JSON with its time), oldest first."""
    return f"{PREFIX}:experiment:{experiment}:changes"


def experiment_stats_key(experiment: str) -> str:
    """hash: per variant "<v>:n", "<v>:sum", "<v>:sumsq" of first in-time rewards (allocator input)."""
    return f"{PREFIX}:experiment:{experiment}:stats"


# -- the learning loop's keys --------------------------------------------------------

ANNOUNCE = f"{PREFIX}:announce"
"""Pub/sub channel: "<policy> <version>" whenever a policy's live version changes."""


def lease_key(policy: str) -> str:
    """string: id of the trainer that holds the policy (expires unless renewed)."""
    return f"{PREFIX}:policy:{policy}:lease"


def checkpoint_seq_key(policy: str) -> str:
    """counter: the last checkpoint number handed out (checkpoint numbers are never reused)."""
    return f"{PREFIX}:policy:{policy}:checkpoint_seq"


def trainer_key(policy: str) -> str:
    """hash: the trainer's view of a policy (applied, pending, outcomes, last publish, ...)."""
    return f"{PREFIX}:policy:{policy}:trainer"


# Lua: takes the lease if free or already ours, and (re)sets its expiry.
# KEYS: lease_key. ARGV: holder id, ttl_ms. Returns 1 if held by ARGV[1] now, else 0.
LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Lua: makes a version live if the caller still holds the lease and the live version is
# still the one it started from (a rollback in between wins), then announces it.
# KEYS: lease_key, LIVE. ARGV: holder id, policy, expected live version, new version, channel.
# Returns 1 when published, 0 when the lease is lost, -1 when the live version changed.
PUBLISH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2] .. ' ' .. ARGV[4])
return 1
"""


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
