from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from auth_service.accounts import Accounts
from common.http import request_claims


def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
ClaimsDep = Annotated[dict[str, Any], Depends(request_claims)]
