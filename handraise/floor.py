"""The floor's timers: invitations to speak (consent rooms) and the speaking limit.

Domain code: Redis only, no Quart, no Twilio. Each change is one Lua script over the room's
keys that changes state and appends its events together, with the Redis server's clock,
so every process agrees on what is due.

* An **invitation** (room setting ``unmute = consent``) lives in the room hash
  (``invite_*`` fields, see :class:`~handraise.rooms.Invitation`) with its deadline. The
  caller's answer (:func:`answer`) and the deadline (:func:`step`) each resolve it once:
  whichever comes first wins, atomically.
* The **speaking limit** (``speak_limit_s``) runs from ``speaker_since``, already in the
  room hash: the cue, "over time" and the auto-mute are each claimed once per turn (a turn
  is the speaker and their ``speaker_since``), so two processes never cue or mute twice.

What is due is found through one sorted set of rooms (:func:`due_rooms`), scored by when
the room next needs a look. It is only an index: :func:`step` reads the truth from the
room, so a stale score costs one idle look, never a wrong action. Writers add the room
with score 0 ("look now", :func:`schedule`); :func:`step` puts back the real next time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import ResponseError

from .errors import Invalid, NotFound
from .events import LUA_EMIT
from .rooms import DEFAULT_MAXLEN
from .store import Redis, eval_script, global_key, key

#: Rooms that may have a timer due, scored by when (ms, Redis clock).
TIMERS_KEY = global_key("floor-timers")
#: Pub/Sub channel: ``"<room> <participant> 1"`` when an invitation starts waiting for that
#: caller's answer, ``… 0`` when it stops. Media streams (any process, any room, whatever
#: the room's mode was when their call began) follow it to switch answer mode; one
#: subscription per process. Published by the same scripts that change the invitation.
ANSWERING_CHANNEL = global_key("floor-answering")

AnswerOutcome = Literal["accepted", "declined", "expired", "none"]
ActionKind = Literal["no_answer", "left", "cue", "over", "mute"]

_HEAD = LUA_EMIT + f"local CHANNEL = '{ANSWERING_CHANNEL}'\n" + """
-- KEYS 1 room, 2 participants, 3 hands, 4 events ; ARGV 1 maxlen, 2 room, 3 participant key prefix
local function now_ms() return math.floor(now_us() / 1000) end
local function present(pid) return redis.call('SISMEMBER', KEYS[2], pid) == 1 end
local function answering(pid, on)
  redis.call('PUBLISH', CHANNEL, ARGV[2] .. ' ' .. pid .. ' ' .. (on and '1' or '0'))
end
-- Resolve the pending invitation of pid: status, the hand it had goes down, one event each.
local function resolve(pid, status, reason, by)
  local at = now_ms()
  redis.call('HSET', KEYS[1], 'invite_status', status, 'invite_answered_at', at)
  answering(pid, false)
  if redis.call('ZREM', KEYS[3], pid) == 1 then
    redis.call('HDEL', ARGV[3] .. pid, 'hand_topic')
    emit(KEYS[4], ARGV[1], {type='hand.lowered', room=ARGV[2], participant=pid, by=by})
  end
  local nxt = redis.call('HGET', KEYS[1], 'invite_next') == '1'
  emit(KEYS[4], ARGV[1], {type='speaker.declined', room=ARGV[2], participant=pid,
    reason=reason, next=nxt})
  return nxt
end
"""

_INVITE = _HEAD + """
-- ARGV 4 pid, 5 timeout ms, 6 '1' if by call-next, 7 by.
-- Returns {'invited', deadline} | {'busy', pid} | {'speaking', pid}
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return redis.error_reply('room closed') end
local pid = ARGV[4]
if not present(pid) then return redis.error_reply('no such participant') end
local now = now_ms()
if redis.call('HGET', KEYS[1], 'invite_status') == 'pending' then
  local cur = redis.call('HGET', KEYS[1], 'invite_pid')
  local deadline = tonumber(redis.call('HGET', KEYS[1], 'invite_deadline') or '0')
  if present(cur) and now < deadline then return {'busy', cur} end
  resolve(cur, present(cur) and 'no_answer' or 'left', present(cur) and 'no answer' or 'left', 'host')
end
if redis.call('HGET', KEYS[1], 'speaker') == pid then return {'speaking', pid} end
local deadline = now + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'invite_pid', pid, 'invite_status', 'pending', 'invite_at', now,
  'invite_deadline', deadline, 'invite_next', ARGV[6])
redis.call('HDEL', KEYS[1], 'invite_answered_at')
local ev = {type='speaker.invited', room=ARGV[2], participant=pid, by=ARGV[7],
  deadline=deadline, next=ARGV[6] == '1'}
local rank = redis.call('ZRANK', KEYS[3], pid)
if rank then ev.position = rank + 1 end
emit(KEYS[4], ARGV[1], ev)
answering(pid, true)
return {'invited', deadline}
"""

_ANSWER = _HEAD + """
-- ARGV 4 pid, 5 'accept' | 'decline', 6 source.
-- Returns {outcome, '1' if the invitation came from call-next}
local pid = ARGV[4]
if redis.call('HGET', KEYS[1], 'invite_status') ~= 'pending'
    or redis.call('HGET', KEYS[1], 'invite_pid') ~= pid then return {'none', ''} end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'invite_deadline') or '0')
if now_ms() >= deadline then
  -- Too late: expired as the sweep would have it (it may not have run yet).
  local nxt = resolve(pid, 'no_answer', 'no answer', ARGV[6])
  return {'expired', nxt and '1' or ''}
end
if ARGV[5] == 'accept' then
  redis.call('HSET', KEYS[1], 'invite_status', 'accepted', 'invite_answered_at', now_ms())
  answering(pid, false)
  emit(KEYS[4], ARGV[1], {type='speaker.accepted', room=ARGV[2], participant=pid, source=ARGV[6]})
  return {'accepted', ''}
end
local nxt = resolve(pid, 'declined', 'declined', ARGV[6])
return {'declined', nxt and '1' or ''}
"""

_WITHDRAW = _HEAD + """
-- ARGV 4 pid, 5 reason. The invitation could not reach them: it goes, their hand stays.
if redis.call('HGET', KEYS[1], 'invite_status') ~= 'pending'
    or redis.call('HGET', KEYS[1], 'invite_pid') ~= ARGV[4] then return 0 end
redis.call('HDEL', KEYS[1], 'invite_pid', 'invite_status', 'invite_deadline', 'invite_at',
  'invite_next', 'invite_answered_at')
answering(ARGV[4], false)
emit(KEYS[4], ARGV[1], {type='speaker.declined', room=ARGV[2], participant=ARGV[4],
  reason=ARGV[5], next=false})
return 1
"""

_STEP = _HEAD + """
-- ARGV 4 warning ms, 5 grace ms. Claims what is due, once.
-- Returns {next due ms or -1, kind, pid, flag, kind, pid, flag, ...}
local now = now_ms()
local out = {}
local next_due = -1
local function due(at) if next_due < 0 or at < next_due then next_due = at end end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return {-1} end
if redis.call('HGET', KEYS[1], 'invite_status') == 'pending' then
  local pid = redis.call('HGET', KEYS[1], 'invite_pid')
  local deadline = tonumber(redis.call('HGET', KEYS[1], 'invite_deadline') or '0')
  if not present(pid) then
    local nxt = resolve(pid, 'left', 'left', 'host')
    table.insert(out, 'left'); table.insert(out, pid); table.insert(out, nxt and '1' or '')
  elseif now >= deadline then
    local nxt = resolve(pid, 'no_answer', 'no answer', 'host')
    table.insert(out, 'no_answer'); table.insert(out, pid); table.insert(out, nxt and '1' or '')
  else
    due(deadline)
  end
end
local spk = redis.call('HGET', KEYS[1], 'speaker')
local since = redis.call('HGET', KEYS[1], 'speaker_since')
local limit = tonumber(redis.call('HGET', KEYS[1], 'speak_limit_s') or '0') or 0
if spk and since and limit > 0 then
  local turn = spk .. '@' .. since
  local over_at = tonumber(since) + limit * 1000
  local cue_at = math.max(tonumber(since), over_at - tonumber(ARGV[4]))
  if redis.call('HGET', KEYS[1], 'speak_cued') ~= turn then
    if now >= cue_at then
      redis.call('HSET', KEYS[1], 'speak_cued', turn)
      -- Past the limit already (a long outage): "over time" says it, not a late cue.
      if now < over_at then
        table.insert(out, 'cue'); table.insert(out, spk); table.insert(out, '')
      end
    else
      due(cue_at)
    end
  end
  if redis.call('HGET', KEYS[1], 'speak_over') ~= turn then
    if now >= over_at then
      redis.call('HSET', KEYS[1], 'speak_over', turn)
      emit(KEYS[4], ARGV[1], {type='speaker.over_time', room=ARGV[2], participant=spk,
        limit_s=limit})
      table.insert(out, 'over'); table.insert(out, spk); table.insert(out, '')
    else
      due(over_at)
    end
  end
  if redis.call('HGET', KEYS[1], 'auto_mute') == '1'
      and redis.call('HGET', KEYS[1], 'speak_muted') ~= turn then
    local mute_at = over_at + tonumber(ARGV[5])
    if now >= mute_at then
      redis.call('HSET', KEYS[1], 'speak_muted', turn)
      table.insert(out, 'mute'); table.insert(out, spk); table.insert(out, '')
    else
      due(mute_at)
    end
  end
end
table.insert(out, 1, next_due)
return out
"""

_UNINDEX = """
-- KEYS 1 timers ; ARGV 1 room, 2 score read. Removes the room only if nobody rescheduled it.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Invited:
    """What :func:`invite` did: ``invited`` (with its deadline), ``busy`` (another caller's
    invitation is pending: ``participant`` names them) or ``speaking`` (they already are)."""

    outcome: Literal["invited", "busy", "speaking"]
    participant: str
    deadline: int | None = None


@dataclass(frozen=True)
class Answered:
    outcome: AnswerOutcome
    #: The invitation came from "Call on next": a decline invites the next hand.
    next: bool = False


@dataclass(frozen=True)
class TimerAction:
    """Something :func:`step` found due and claimed: this process alone carries it out."""

    room: str
    kind: ActionKind
    participant: str
    #: ``no_answer`` and ``left``: the invitation came from "Call on next".
    next: bool = False


def _keys(room: str) -> list[str]:
    return [key(room, "room"), key(room, "participants"), key(room, "hands"), key(room, "events")]


async def _run(redis: Redis, script: str, room: str, *args: object, maxlen: int) -> Any:
    try:
        return await eval_script(redis, script, 4, *_keys(room), maxlen, room, key(room, "p", ""), *args)
    except ResponseError as exc:
        if "no such participant" in str(exc):
            raise NotFound(f"That participant is not in room {room!r}.") from exc
        if "room closed" in str(exc):
            raise Invalid(f"Room {room!r} is closed.") from exc
        raise


async def schedule(redis: Redis, room: str) -> None:
    """Have the next sweep look at ``room`` (after a change that may start a timer)."""
    await redis.zadd(TIMERS_KEY, {room: 0}, lt=True)


async def invite(redis: Redis, room: str, pid: str, *, timeout_s: float, next_hand: bool,
                 by: str = "host", maxlen: int = DEFAULT_MAXLEN) -> Invited:
    """Invite ``pid`` to speak: pending until they answer or ``timeout_s`` passes.

    One invitation per room at a time: while another caller's is pending (and not yet due)
    this returns ``busy``. An expired one not yet swept is resolved as "no answer" first.
    """
    outcome, value = await _run(redis, _INVITE, room, pid, max(1, round(timeout_s * 1000)),
                                "1" if next_hand else "0", by, maxlen=maxlen)
    await schedule(redis, room)
    if outcome == "invited":
        return Invited("invited", pid, int(value))
    return Invited(outcome, str(value))


async def answer(redis: Redis, room: str, pid: str, *, accept: bool, source: str,
                 maxlen: int = DEFAULT_MAXLEN) -> Answered:
    """The caller's answer: ``accepted``, ``declined``, ``expired`` (too late: resolved as
    no answer) or ``none`` (no invitation of theirs is pending). Exactly one answer counts."""
    outcome, nxt = await _run(redis, _ANSWER, room, pid, "accept" if accept else "decline",
                              source, maxlen=maxlen)
    return Answered(outcome, nxt == "1")


async def withdraw(redis: Redis, room: str, pid: str, *, reason: str = "unreachable",
                   maxlen: int = DEFAULT_MAXLEN) -> bool:
    """Take back ``pid``'s pending invitation (it could not be delivered); their hand stays."""
    return bool(await _run(redis, _WITHDRAW, room, pid, reason, maxlen=maxlen))


async def step(redis: Redis, room: str, *, warn_s: float, grace_s: float,
               maxlen: int = DEFAULT_MAXLEN) -> list[TimerAction]:
    """Claim what is due in ``room`` now and reschedule its next look; returns the claims.

    Safe to run from every process at once: each action is claimed by exactly one call.
    """
    reply = await _run(redis, _STEP, room, round(warn_s * 1000), round(grace_s * 1000),
                       maxlen=maxlen)
    next_due, flat = int(reply[0]), reply[1:]
    actions = [TimerAction(room, flat[i], flat[i + 1], flat[i + 2] == "1")
               for i in range(0, len(flat), 3)]
    if next_due >= 0:
        await redis.zadd(TIMERS_KEY, {room: next_due})
    else:
        score = await redis.zscore(TIMERS_KEY, room)
        if score is not None:
            await eval_script(redis, _UNINDEX, 1, TIMERS_KEY, room, _score_text(score))
    # A writer may have scheduled the room between the script and the index update: look
    # again (cheap) and put back the earliest time if it is earlier than what is indexed.
    again = await _next_due(redis, room, warn_s=warn_s, grace_s=grace_s)
    if again is not None:
        await redis.zadd(TIMERS_KEY, {room: again}, lt=True)
    return actions


def _score_text(score: float) -> str:
    return str(int(score)) if float(score).is_integer() else repr(score)


async def _next_due(redis: Redis, room: str, *, warn_s: float, grace_s: float) -> int | None:
    """When ``room`` next needs a look (ms), read without claiming anything."""
    h = await redis.hgetall(key(room, "room"))
    if h.get("status") != "open":
        return None
    times: list[int] = []
    if h.get("invite_status") == "pending" and h.get("invite_deadline", "").isdigit():
        times.append(int(h["invite_deadline"]))
    since, limit = h.get("speaker_since", ""), h.get("speak_limit_s", "0")
    if h.get("speaker") and since.isdigit() and limit.isdigit() and int(limit) > 0:
        turn = f"{h['speaker']}@{since}"
        over_at = int(since) + int(limit) * 1000
        if h.get("speak_cued") != turn:
            times.append(max(int(since), over_at - round(warn_s * 1000)))
        if h.get("speak_over") != turn:
            times.append(over_at)
        if h.get("auto_mute") == "1" and h.get("speak_muted") != turn:
            times.append(over_at + round(grace_s * 1000))
    return min(times) if times else None


async def due_rooms(redis: Redis, *, limit: int = 500) -> list[str]:
    """Rooms whose next look is due now (by the Redis server's clock)."""
    seconds, micros = await redis.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    return [str(r) for r in await redis.zrangebyscore(TIMERS_KEY, "-inf", now, start=0, num=limit)]


async def sweep(redis: Redis, *, warn_s: float, grace_s: float,
                maxlen: int = DEFAULT_MAXLEN) -> list[TimerAction]:
    """One sweep: step every due room; returns the actions this caller claimed."""
    actions: list[TimerAction] = []
    for room in await due_rooms(redis):
        actions += await step(redis, room, warn_s=warn_s, grace_s=grace_s, maxlen=maxlen)
    return actions
