"""A fastapi-users 15 app as its documentation builds one: SQLAlchemy users in SQLite (aiosqlite), JWT
strategy, a bearer and a cookie transport, and the register, reset-password, verify and users routers.

The ``UserManager`` keeps the reset and verification tokens it issues in ``issued`` (the app would
e-mail them) so the tests can use them and check that no row contains them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, CookieTransport, JWTStrategy
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users.password import PasswordHelper
from pwdlib import PasswordHash
from pwdlib.hashers.bcrypt import BcryptHasher
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from audit_middleware.capture.frameworks.fastapi import AuditedUserManager, audit_user

SECRET = "fastapi-users-test-secret-0123456789abcdef"
PASSWORD = "correct horse battery staple 7!"


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


class UserUpdate(schemas.BaseUserUpdate):
    pass


@dataclass
class UsersApp:
    """The app and what a test needs around it."""

    app: FastAPI
    engine: AsyncEngine
    issued: dict[str, str] = field(default_factory=dict)  # "reset" / "verify" -> the last token issued

    async def aclose(self) -> None:
        await self.engine.dispose()


def build(db_path: Path, *, audited: bool = True) -> UsersApp:
    """The fastapi-users app on a SQLite file; ``audited`` adds the audit glue (hooks and user dependency)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    issued: dict[str, str] = {}
    # bcrypt at its lowest cost: the default argon2 parameters would make the suite slow, not more real
    password_helper = PasswordHelper(PasswordHash((BcryptHasher(rounds=4),)))

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    async def get_user_db(session: AsyncSession = Depends(get_session)) -> AsyncIterator[Any]:  # noqa: B008
        yield SQLAlchemyUserDatabase(session, User)

    bases: tuple[type[Any], ...] = (AuditedUserManager,) if audited else ()

    class UserManager(*bases, UUIDIDMixin, BaseUserManager[User, uuid.UUID]):  # type: ignore[misc]
        reset_password_token_secret = SECRET
        verification_token_secret = SECRET

        # The documentation's own hooks: they "send the e-mail" and call no super().
        async def on_after_forgot_password(self, user: User, token: str, request: Request | None = None) -> None:
            issued["reset"] = token

        async def on_after_request_verify(self, user: User, token: str, request: Request | None = None) -> None:
            issued["verify"] = token

    async def get_user_manager(user_db: Any = Depends(get_user_db)) -> AsyncIterator[UserManager]:  # noqa: B008
        yield UserManager(user_db, password_helper)

    def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
        return JWTStrategy(secret=SECRET, lifetime_seconds=3600)

    jwt_backend = AuthenticationBackend(
        name="jwt", transport=BearerTransport(tokenUrl="auth/jwt/login"), get_strategy=get_jwt_strategy
    )
    cookie_backend = AuthenticationBackend(
        name="cookie",
        transport=CookieTransport(cookie_max_age=3600, cookie_secure=False),
        get_strategy=get_jwt_strategy,
    )
    users = FastAPIUsers[User, uuid.UUID](get_user_manager, [jwt_backend, cookie_backend])
    # The audit glue: names the user fastapi-users authenticated (the logout routes have no hook)
    named = [Depends(audit_user(users.current_user(optional=True)))] if audited else []

    app = FastAPI()
    app.include_router(users.get_auth_router(jwt_backend), prefix="/auth/jwt", dependencies=named)
    app.include_router(users.get_auth_router(cookie_backend), prefix="/auth/cookie", dependencies=named)
    app.include_router(users.get_register_router(UserRead, UserCreate), prefix="/auth")
    app.include_router(users.get_reset_password_router(), prefix="/auth")
    app.include_router(users.get_verify_router(UserRead), prefix="/auth")
    app.include_router(users.get_users_router(UserRead, UserUpdate), prefix="/users", dependencies=named)
    return UsersApp(app, engine, issued)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
