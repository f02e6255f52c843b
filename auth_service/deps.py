from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from auth_service.accounts import Accounts
from auth_service.refresh import RefreshTokens
from common.http import request_claims


def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def get_refresh_tokens(request: Request) -> RefreshTokens:
    return request.app.state.refresh_tokens


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
RefreshTokensDep = Annotated[RefreshTokens, Depends(get_refresh_tokens)]
ClaimsDep = Annotated[dict[str, Any], Depends(request_claims)]
