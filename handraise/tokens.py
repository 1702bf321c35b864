"""API tokens: bearer secrets for integrations, stored only as their SHA-256.

``create_token`` returns the secret once; Redis keeps ``hr:{tokens}:token:<id>`` (name,
optional room scope, rate limit, times) and ``hr:{tokens}:hash:<sha256>`` -> id, so a request is
authenticated with one lookup and a leaked Redis dump holds no usable token. Revoking
deletes both: a revoked token is as unknown as a made-up one.

Each token has its own rate limit (requests per minute, a fixed window from the first
request in it), counted in Redis so that every process agrees.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass

from .errors import Invalid, NotFound
from .rooms import get_room, new_id
from .store import Redis, eval_script, global_key, key

#: What a token looks like: a prefix that secret scanners and people recognise, then 43
#: random url-safe characters (256 bits).
TOKEN_PREFIX = "hr_"
DEFAULT_RATE_PER_MIN = 600
RATE_WINDOW_S = 60
_TOKEN = re.compile(r"^hr_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class ApiToken:
    """A token as listed: never the secret itself."""

    id: str
    name: str
    #: The one room this token may see and act on; None for every room.
    room: str | None
    rate_per_min: int
    created_at: int  # ms, Redis clock
    last_used_at: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "room": self.room,
                "rate_per_min": self.rate_per_min, "created_at": self.created_at,
                "last_used_at": self.last_used_at}


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# The registry is hash-tagged like a room ("hr:{tokens}:..."), so that its transactions stay
# in one Redis Cluster slot.
def _token_key(token_id: str) -> str:
    return key("tokens", "token", token_id)


def _hash_key(digest: str) -> str:
    return key("tokens", "hash", digest)


def _index_key() -> str:
    return key("tokens", "index")


async def _now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def create_token(redis: Redis, name: str, *, room: str | None = None,
                       rate_per_min: int = DEFAULT_RATE_PER_MIN) -> tuple[str, ApiToken]:
    """A new token; returns (the secret, shown only now, and what is stored about it)."""
    name = name.strip()
    if not name or len(name) > 80 or any(ord(c) < 32 for c in name):
        raise Invalid("A token needs a name of 1 to 80 printable characters.")
    if not 1 <= rate_per_min <= 100_000:
        raise Invalid("The rate limit must be from 1 to 100000 requests per minute.")
    if room is not None:
        await get_room(redis, room)  # NotFound for a typo, before a useless token exists
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(id=new_id("t", 8), name=name, room=room, rate_per_min=rate_per_min,
                     created_at=await _now_ms(redis))
    digest = token_hash(secret)
    fields = {"name": name, "room": room or "", "rate": rate_per_min,
              "created_at": token.created_at, "hash": digest}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(_token_key(token.id), mapping=fields)
        pipe.set(_hash_key(digest), token.id)
        pipe.zadd(_index_key(), {token.id: token.created_at})
        await pipe.execute()
    return secret, token


def _token(token_id: str, h: dict[str, str]) -> ApiToken:
    last = h.get("last_used_at")
    return ApiToken(id=token_id, name=h.get("name", ""), room=h.get("room") or None,
                    rate_per_min=int(h.get("rate", DEFAULT_RATE_PER_MIN)),
                    created_at=int(h.get("created_at", "0")), last_used_at=int(last) if last else None)


async def list_tokens(redis: Redis) -> list[ApiToken]:
    """Every live token, oldest first."""
    ids = await redis.zrange(_index_key(), 0, -1)
    found = []
    for token_id in ids:
        h = await redis.hgetall(_token_key(token_id))
        if h:
            found.append(_token(token_id, h))
    return found


async def revoke_token(redis: Redis, which: str) -> ApiToken:
    """Revoke a token by its id (or its name, when only one token has it); it stops working at once."""
    tokens = await list_tokens(redis)
    matches = [t for t in tokens if t.id == which] or [t for t in tokens if t.name == which]
    if not matches:
        raise NotFound(f"There is no token {which!r} (see: handraise tokens list).")
    if len(matches) > 1:
        raise Invalid(f"Several tokens are named {which!r}; revoke one by its id.")
    token = matches[0]
    digest = await redis.hget(_token_key(token.id), "hash")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(_token_key(token.id))
        if digest:
            pipe.delete(_hash_key(digest))
        pipe.zrem(_index_key(), token.id)
        await pipe.execute()
    return token


async def authenticate(redis: Redis, secret: str) -> ApiToken | None:
    """The token whose secret this is, or None (unknown, malformed or revoked)."""
    if not _TOKEN.match(secret):
        return None
    token_id = await redis.get(_hash_key(token_hash(secret)))
    if not token_id:
        return None
    h = await redis.hgetall(_token_key(token_id))
    if not h:
        return None
    await redis.hset(_token_key(token_id), "last_used_at", await _now_ms(redis))
    return _token(token_id, h)


_TAKE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return ttl
end
return 0
"""


async def take(redis: Redis, token: ApiToken, *, window_s: int = RATE_WINDOW_S) -> int:
    """Count one request of ``token``: 0 if allowed, else the seconds until its window ends."""
    wait_ms = int(await eval_script(redis, _TAKE, 1, global_key("limit", "api-token", token.id),
                                    window_s * 1000, token.rate_per_min))
    return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0
