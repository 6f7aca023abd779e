"""The LiteLLM proxy's keys for the tests, without a database.

LiteLLM's virtual keys (`/key/generate`) live in Postgres, reached through
Prisma, whose query engine is downloaded from Prisma's own server at
`prisma generate`: no package registry serves it, so the proxy here runs
without a database. What stands in for a generated key is LiteLLM's
documented custom auth hook (`general_settings.custom_auth`): this module
answers each request with the key's `UserAPIKeyAuth`, read from the JSON file
named by GPO_PROXY_KEYS, and the proxy itself enforces the limits on it
(rpm_limit by its rate limiter, max_budget by its budget check against the
spend it counts). The master key is accepted too, with no limits.

    {"sk-team": {"key_alias": "team", "rpm_limit": 10, "max_budget": 0.01}}

Runs inside the proxy's own venv (it imports the proxy's fastapi and litellm).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth


def _keys() -> dict[str, dict[str, Any]]:
    path = Path(os.environ["GPO_PROXY_KEYS"])
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of key -> limits")
    return data


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """The key's limits, or 401 for a key the file does not hold."""
    master = os.environ.get("LITELLM_MASTER_KEY")
    if master and api_key == master:
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN)
    limits = _keys().get(api_key)
    if limits is None:
        raise HTTPException(status_code=401, detail="unknown key")
    token = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
    return UserAPIKeyAuth(api_key=token, token=token, **limits)
