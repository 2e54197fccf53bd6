"""The event log's Lua scripts: each touches its keys atomically (key names from keys.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventlog.keys import (
    ANNOUNCE,
    CANDIDATES,
    EVENT_ENTRY,
    EVENT_EXPERIMENT,
    EVENT_POLICY,
    EVENT_RESPONSE,
    EVENT_REWARDS,
    EVENT_SPOOLED,
    EVENT_TS_MS,
    EVENT_VARIANT,
    LIVE,
    STAT_DECISIONS,
    STAT_DUPLICATE,
    STAT_LATE,
    STAT_REWARDS,
    VARIANT_COUNT,
    VARIANT_SUM,
    VARIANT_SUM_SQUARES,
    decisions_key,
    event_key,
    experiment_stats_key,
    lease_key,
    rewards_key,
    stats_key,
)
from eventlog.records import DecisionRecord, RewardRecord, text

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
  redis.call('HINCRBY', KEYS[4], variant .. '{VARIANT_COUNT}', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], variant .. '{VARIANT_SUM}', reward)
  redis.call('HINCRBYFLOAT', KEYS[4], variant .. '{VARIANT_SUM_SQUARES}', reward * reward)
end
return sequence
"""

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

# Lua: the one way the live pointer moves (publish, rollback, promote). It moves only if the
# live version is still the one the caller started from, the caller still holds the trainer
# lease (when it names a holder) and the candidate is still the one it evaluated (when it
# names one, which is then cleared); then it announces the new version.
# KEYS: LIVE, lease_key, CANDIDATES.
# ARGV: policy, expected live version, new version, announce channel, lease holder or "",
#       expected candidate or "".
# Returns 1 when moved, 0 when the lease is lost, -1 when the live version changed, -2 when
# the candidate changed.
MOVE_LIVE_LUA = """
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[5] then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
if ARGV[6] ~= '' then
  if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[6] then return -2 end
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. ARGV[3])
return 1
"""


# -- the scripts' arguments (one place for both clients) ------------------------------------


def record_decisions_call(
    records: Sequence[DecisionRecord], responses: Sequence[bytes | str], ttl_ms: int
) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) of RECORD_DECISIONS_LUA for a batch of decisions of one policy."""
    policy = records[0].policy
    names = list(records[0].to_fields())
    keys = [decisions_key(policy), stats_key(policy)]
    positions = [names.index("experiment") + 1, names.index("variant") + 1]
    args: list[Any] = [policy, records[0].ts_ms, ttl_ms, len(names), *positions, *names]
    for record, response in zip(records, responses, strict=True):
        keys.append(event_key(record.event_id))
        args.append(response)
        args.extend(record.to_fields().values())
    return keys, args


def recorded_decisions(replies: list[Any]) -> list[tuple[str, bytes] | None]:
    """RECORD_DECISIONS_LUA's replies: per row None when recorded, else (policy, response)
    of the earlier decision that holds its event id."""
    return [None if reply == 1 else (text(reply[0]), reply[1]) for reply in replies]


def record_reward_call(
    policy: str, record: RewardRecord, aggregation: str, experiment: str | None, token: str
) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of RECORD_REWARD_LUA for one reward."""
    keys = [event_key(record.event_id), rewards_key(policy), stats_key(policy)]
    keys.append(experiment_stats_key(experiment or policy))  # unused without an experiment
    fields = [item for pair in record.to_fields().items() for item in pair]
    return keys, ["1" if record.late else "0", aggregation, token, *fields]


def move_live_call(
    policy: str, expected: str, version: str, holder: str = "", candidate: str = ""
) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of MOVE_LIVE_LUA."""
    return [LIVE, lease_key(policy), CANDIDATES], [policy, expected, version, ANNOUNCE, holder, candidate]


LEASE_LOST, LIVE_CHANGED, CANDIDATE_CHANGED, MOVED = 0, -1, -2, 1
"""MOVE_LIVE_LUA's replies."""
