"""The FastAPI tutorial "OAuth2 with Password (and hashing), Bearer with JWT tokens" under AuditMiddleware.

The app is the tutorial's (PyJWT, pwdlib's recommended argon2 hash, ``OAuth2PasswordRequestForm`` on
``POST /token``, ``GET /users/me/``); the only addition is the audit glue on ``/users/me/``. Its users
have no id but a username, stored as ``metadata.user_ref``. Rows in real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
import pytest
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import APIKeyCookie, OAuth2PasswordBearer, OAuth2PasswordRequestForm
from jwt.exceptions import InvalidTokenError
from pwdlib import PasswordHash
from pydantic import BaseModel

from audit_middleware.capture.frameworks.fastapi import audit_user
from audit_middleware.errors import ConfigurationError
from tests.conftest import PgTarget
from tests.fastapi_helpers import CLIENT_IP, assert_no_secret, audit_table, audited_client, rows

pytestmark = pytest.mark.anyio

SECRET_KEY = "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7"  # the tutorial's
ALGORITHM = "HS256"
PASSWORD = "secret"  # the tutorial's password for johndoe
password_hash = PasswordHash.recommended()
fake_users_db = {
    "johndoe": {
        "username": "johndoe",
        "full_name": "John Doe",
        "email": "johndoe@example.com",
        "hashed_password": password_hash.hash(PASSWORD),
        "disabled": False,
    }
}


class Token(BaseModel):
    access_token: str
    token_type: str


class User(BaseModel):
    username: str
    email: str | None = None
    full_name: str | None = None
    disabled: bool | None = None


class UserInDB(User):
    hashed_password: str


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


def get_user(db: dict[str, Any], username: str) -> UserInDB | None:
    return UserInDB(**db[username]) if username in db else None


def authenticate_user(db: dict[str, Any], username: str, password: str) -> UserInDB | None:
    user = get_user(db, username)
    if not user or not password_hash.verify(password, user.hashed_password):
        return None
    return user


def create_access_token(data: dict[str, Any], expires_delta: timedelta) -> str:
    return jwt.encode({**data, "exp": datetime.now(UTC) + expires_delta}, SECRET_KEY, algorithm=ALGORITHM)


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]) -> User:
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        username = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM]).get("sub")
    except InvalidTokenError:
        raise credentials_exception from None
    user = get_user(fake_users_db, username) if username else None
    if user is None:
        raise credentials_exception
    return user


async def get_current_active_user(current_user: Annotated[User, Depends(get_current_user)]) -> User:
    if current_user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    return current_user


def tutorial_app() -> FastAPI:
    app = FastAPI()

    @app.post("/token")
    async def login_for_access_token(form_data: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
        user = authenticate_user(fake_users_db, form_data.username, form_data.password)
        if not user:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Incorrect username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        access_token = create_access_token({"sub": user.username}, timedelta(minutes=30))
        return Token(access_token=access_token, token_type="bearer")

    # The audit glue: the user the tutorial's own dependency verified (FastAPI runs it once per request)
    named = [Depends(audit_user(get_current_active_user, user_id=lambda user: user.username))]

    @app.get("/users/me/", dependencies=named)
    async def read_users_me(current_user: Annotated[User, Depends(get_current_active_user)]) -> User:
        return current_user

    return app


ROUTES = {"GET /users/me": "profile_viewed"}


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgTarget]:
    with audit_table(pg_dsn) as target:
        yield target


async def test_token_success_names_the_user_by_username(pg: PgTarget) -> None:
    async with audited_client(tutorial_app(), pg) as c:
        response = await c.post("/token", data={"username": "johndoe", "password": PASSWORD})
    assert response.status_code == 200
    [row] = await rows(pg)
    assert (row.action, row.user_id, row.metadata["user_ref"]) == ("login", None, "johndoe")
    assert row.metadata["ip"] == CLIENT_IP and row.metadata["http"]["route"] == "/token"
    assert_no_secret([row], response.json()["access_token"], "password=" + PASSWORD)


async def test_token_with_a_wrong_password_is_login_failed(pg: PgTarget) -> None:
    async with audited_client(tutorial_app(), pg) as c:
        response = await c.post("/token", data={"username": "johndoe", "password": "not-the-secret"})
    assert response.status_code == 401
    [row] = await rows(pg)
    assert (row.action, row.user_id, row.metadata.get("user_ref")) == ("login_failed", None, None)
    assert row.metadata["identifier"] == "johndoe" and row.metadata["ip"] == CLIENT_IP
    assert_no_secret([row], "not-the-secret")


async def test_users_me_names_the_user_its_token_was_verified_for(pg: PgTarget) -> None:
    async with audited_client(tutorial_app(), pg, routes=ROUTES) as c:
        token = (await c.post("/token", data={"username": "johndoe", "password": PASSWORD})).json()["access_token"]
        me = await c.get("/users/me/", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == "johndoe"
    found = await rows(pg)
    assert [(row.action, row.metadata.get("user_ref")) for row in found] == [
        ("login", "johndoe"),
        ("profile_viewed", "johndoe"),
    ]
    assert found[1].metadata["http"]["route"] == "/users/me/"
    assert_no_secret(found, token)


async def test_users_me_with_a_token_signed_by_someone_else_names_nobody(pg: PgTarget) -> None:
    forged = jwt.encode({"sub": "johndoe"}, "not-the-apps-key-0123456789abcdef", algorithm=ALGORITHM)
    async with audited_client(tutorial_app(), pg, routes=ROUTES) as c:
        me = await c.get("/users/me/", headers={"authorization": f"Bearer {forged}"})
    assert me.status_code == 401
    [row] = await rows(pg)
    assert (row.action, row.user_id, row.metadata.get("user_ref")) == ("profile_viewed_failed", None, None)
    assert_no_secret([row], forged)


@pytest.mark.parametrize("scheme", [OAuth2PasswordBearer(tokenUrl="token"), APIKeyCookie(name="session")])
def test_audit_user_refuses_a_security_scheme_that_returns_the_credential(scheme: Any) -> None:
    """``audit_user(oauth2_scheme)`` reads as "the current user" but the scheme returns the raw bearer token
    (an API-key scheme the key): named as the user, an opaque token would be stored as ``metadata.user_ref``
    (the redactor recognises JWTs, not random tokens). Refused when the app is built, with the fix."""
    with pytest.raises(ConfigurationError, match="get_current_user"):
        audit_user(scheme)
