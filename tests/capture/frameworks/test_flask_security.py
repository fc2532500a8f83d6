"""Flask-Security-Too (HTML forms) behind AuditWSGIMiddleware + install_flask: every flow, rows in PostgreSQL.

Flask-Security answers a wrong password, a wrong old password and a wrong code with 200 and the form
again, a bad reset token with a redirect, and ``GET /logout`` with 405: the outcome comes from its
signals, never from the status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, current_app
from flask_security import MailUtil, Security, SQLAlchemyUserDatastore, hash_password
from flask_security.models import fsqla_v2 as fsqla
from flask_security.models.fsqla import FsModels
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect  # type: ignore[import-untyped]

from tests.conftest import PgTarget
from tests.flask_helpers import AuditedFlask, assert_rows

# Flask-Security 5.9's own forms on WTForms 3.3 (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning")

EMAIL = "ann@example.com"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor and then some"
WRONG = "wrong-guess-1234"


class RecordingMail(MailUtil):
    """Keeps what Flask-Security would e-mail (the reset link's token) instead of sending it."""

    def send_mail(
        self, template: str, subject: str, recipient: Any, sender: Any, body: Any, html: Any, **kw: Any
    ) -> None:
        current_app.extensions["sent_mail"].append(kw)


def security_app(**config: Any) -> tuple[Flask, Security, Any]:
    """A Flask-Security app as its quickstart builds one (SQLAlchemy models, integer user ids), with
    registration, recovery, password change and two-factor (authenticator) on."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="flask-secret-key-for-tests-only",
        SECURITY_PASSWORD_SALT="salt-for-tests",
        SECURITY_PASSWORD_HASH="plaintext",  # fast; the hash is not what is audited
        SQLALCHEMY_DATABASE_URI="sqlite://",
        WTF_CSRF_ENABLED=False,
        SECURITY_REGISTERABLE=True,
        SECURITY_SEND_REGISTER_EMAIL=False,
        SECURITY_RECOVERABLE=True,
        SECURITY_CHANGEABLE=True,
        SECURITY_TWO_FACTOR=True,
        SECURITY_TWO_FACTOR_ENABLED_METHODS=["authenticator"],
        SECURITY_TOTP_SECRETS={"1": "TjQ9Qa31VOrfEzuPy4VHQWPCTmRzCnFzMKLxXYiZu9B"},
        SECURITY_TOTP_ISSUER="tests",
        SECURITY_EMAIL_VALIDATOR_ARGS={"check_deliverability": False},
    )
    app.config.update(config)
    app.extensions["sent_mail"] = []
    db = SQLAlchemy(app)
    FsModels.set_db_info(db)  # type: ignore[no-untyped-call]

    class Role(db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined,misc]
        pass

    class User(db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined,misc]
        pass

    security = Security(app, SQLAlchemyUserDatastore(db, User, Role), mail_util_cls=RecordingMail)
    with app.app_context():
        db.create_all()
        security.datastore.create_user(email=EMAIL, password=hash_password(PASSWORD))
        db.session.commit()
    return app, security, db


@pytest.fixture
def site(pg: PgTarget) -> Iterator[AuditedFlask]:
    app, _, _ = security_app()
    audited = AuditedFlask(app, pg)
    yield audited
    audited.close()


def user_ref(site: AuditedFlask, email: str = EMAIL) -> str:
    with site.app.app_context():
        return str(site.app.extensions["security"].datastore.find_user(email=email).id)


def wrong(code: str) -> str:
    """A code that is not ``code`` (so never valid by chance)."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def login(site: AuditedFlask, password: str = PASSWORD) -> Any:
    return site.post("/login", {"email": EMAIL, "password": password})


def test_wrong_password_rerendered_with_200_is_login_failed(site: AuditedFlask) -> None:
    assert login(site, WRONG).status_code == 200  # the form again
    assert site.post("/login", {"email": "nobody@example.com", "password": WRONG}).status_code == 200
    assert login(site).status_code == 302
    assert_rows(
        site.rows(),
        [("login_failed", None), ("login_failed", None), ("login", user_ref(site))],
        PASSWORD,
        WRONG,
        site.cookie("session"),
    )


def test_failed_login_names_its_source_and_the_attempted_identifier(site: AuditedFlask) -> None:
    login(site, WRONG)
    [row] = site.rows()
    assert row.metadata["auth"] == {"source": "flask_security.user_failed_authn", "evidence": ["login_failed"]}
    assert row.metadata["identifier"] == EMAIL


def test_get_logout_answered_405_is_no_logout(site: AuditedFlask) -> None:
    login(site)
    assert site.get("/logout").status_code == 405
    assert site.post("/logout").status_code == 302
    assert site.post("/logout").status_code == 302  # nobody is signed in any more: nothing happens
    me = user_ref(site)
    assert_rows(site.rows(), [("login", me), ("logout", me)], site.cookie("session"))


def test_password_change_with_a_wrong_old_password_is_password_change_failed(site: AuditedFlask) -> None:
    login(site)
    session_cookie = site.cookie("session")
    change = {"password": WRONG, "new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
    assert site.post("/change", change).status_code == 200  # the form again
    assert site.post("/change", {**change, "password": PASSWORD}).status_code == 302
    me = user_ref(site)
    assert_rows(
        site.rows(),
        [("login", me), ("password_change_failed", me), ("password_change", me)],
        PASSWORD,
        NEW_PASSWORD,
        WRONG,
        session_cookie,
        site.cookie("session"),
    )


def test_password_change_by_an_anonymous_caller_is_no_row(site: AuditedFlask) -> None:
    change = {"password": WRONG, "new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
    assert site.post("/change", change).status_code == 302  # to the login page: the view never ran
    assert site.rows() == []


def test_reset_request_and_reset_with_bad_and_good_tokens(site: AuditedFlask) -> None:
    assert site.post("/reset", {"email": "nobody@example.com"}).status_code == 200
    assert site.post("/reset", {"email": EMAIL}).status_code == 200
    [mail] = site.app.extensions["sent_mail"]
    token = mail["reset_token"]
    new = {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    assert site.post("/reset/not-a-valid-token", new).status_code == 302  # to the request form
    assert site.post(f"/reset/{token}", new).status_code == 302
    me = user_ref(site)
    rows = site.rows()
    assert_rows(
        rows,
        [
            ("password_reset_requested_failed", None),
            ("password_reset_requested", None),  # anyone can ask for an e-mail's reset: not its owner's action
            ("password_reset_failed", None),
            ("password_reset", me),
        ],
        token,
        NEW_PASSWORD,
    )
    assert rows[3].metadata["http"]["route"] == "/reset/{token}"


def test_signup_and_duplicate_signup(site: AuditedFlask) -> None:
    form = {"email": "bob@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    assert site.post("/register", form).status_code == 302  # signed up and signed in
    assert site.post("/logout").status_code == 302
    assert site.post("/register", form).status_code == 200  # the form again: the address is taken
    bob = user_ref(site, "bob@example.com")
    rows = site.rows()
    assert_rows(rows, [("signup", bob), ("logout", bob), ("signup_failed", None)], PASSWORD, site.cookie("session"))
    assert rows[0].metadata["auth"]["evidence"] == ["signup", "login"]  # the sign-up signed bob in too


def test_two_factor_login_records_the_pending_stage_then_the_code(site: AuditedFlask) -> None:
    security = site.app.extensions["security"]
    with site.app.app_context():
        user = security.datastore.find_user(email=EMAIL)
        secret = security.totp_factory.generate_totp_secret()
        security.datastore.tf_set(user, "authenticator", totp_secret=secret)
        security.datastore.commit()
    assert login(site).headers["Location"].startswith("/tf-validate")  # password right, code pending
    code = security.totp_factory.generate_totp_password(secret)
    assert site.post("/tf-validate", {"code": wrong(code)}).status_code == 200  # the form again
    assert site.post("/tf-validate", {"code": code}).status_code == 302
    me = user_ref(site)
    rows = site.rows()
    assert_rows(
        rows,
        [("login_mfa_pending", me), ("mfa_verify_failed", None), ("mfa_verify", me)],
        PASSWORD,
        code,
        secret,
        site.cookie("session"),
    )
    assert rows[2].metadata["auth"]["evidence"] == ["mfa_verify", "login"]


def test_setting_up_two_factor_records_the_change_and_a_wrong_code(site: AuditedFlask) -> None:
    login(site)
    assert site.post("/tf-setup", {"setup": "authenticator"}).status_code == 200
    with site.client.session_transaction() as session:
        secret = session["tf_totp_secret"]
    code = site.app.extensions["security"].totp_factory.generate_totp_password(secret)
    assert site.post("/tf-validate", {"code": wrong(code)}).status_code == 200  # the form again
    assert site.post("/tf-validate", {"code": code}).status_code == 302
    me = user_ref(site)
    rows = site.rows()
    assert_rows(rows, [("login", me), ("mfa_changed_failed", me), ("mfa_changed", me)], code, secret)


def test_disabling_two_factor_on_an_unmapped_route_is_recorded(site: AuditedFlask) -> None:
    login(site)
    security = site.app.extensions["security"]
    with site.app.app_context():
        user = security.datastore.find_user(email=EMAIL)
        security.datastore.tf_set(user, "authenticator", totp_secret=security.totp_factory.generate_totp_secret())
        security.datastore.commit()
    assert site.post("/tf-setup", {"setup": "disable"}).status_code == 302
    me = user_ref(site)
    rows = site.rows()
    assert_rows(rows, [("login", me), ("mfa_disabled", me)], site.cookie("session"))
    assert rows[1].metadata["auth"]["source"] == "flask_security.tf_disabled"


def test_two_factor_over_the_json_api_answers_200_at_each_stage(site: AuditedFlask) -> None:
    security = site.app.extensions["security"]
    with site.app.app_context():
        user = security.datastore.find_user(email=EMAIL)
        secret = security.totp_factory.generate_totp_secret()
        security.datastore.tf_set(user, "authenticator", totp_secret=secret)
        security.datastore.commit()
    pending = site.open("POST", "/login", json={"email": EMAIL, "password": PASSWORD})
    assert (pending.status_code, pending.get_json()["response"]["tf_required"]) == (200, True)
    code = security.totp_factory.generate_totp_password(secret)
    assert site.open("POST", "/tf-validate", json={"code": wrong(code)}).status_code == 400
    assert site.open("POST", "/tf-validate", json={"code": code}).status_code == 200
    me = user_ref(site)
    assert_rows(
        site.rows(),
        [("login_mfa_pending", me), ("mfa_verify_failed", None), ("mfa_verify", me)],
        PASSWORD,
        code,
        site.cookie("session"),
    )


def test_a_duplicate_signup_answered_like_a_success_is_signup_failed(pg: PgTarget) -> None:
    """RETURN_GENERIC_RESPONSES (against account enumeration): a taken address gets the success's redirect."""
    app, _, _ = security_app(SECURITY_RETURN_GENERIC_RESPONSES=True)
    site = AuditedFlask(app, pg)
    try:
        form = {"email": EMAIL, "password": PASSWORD, "password_confirm": PASSWORD}
        assert site.post("/register", form).status_code == 302
        rows = site.rows()
    finally:
        site.close()
    assert_rows(rows, [("signup_failed", None)], PASSWORD)
    assert rows[0].metadata["auth"]["source"] == "flask_security.user_not_registered"


def test_a_post_turned_away_before_the_login_view_is_no_pending_second_factor(pg: PgTarget) -> None:
    """CSRF checked by ``unauth_csrf`` (Flask-Security's JSON set-up): a POST without the token never reaches the
    login view, so an earlier attempt's ``tf_user_id`` is still in the session. A wrong password sent so is no
    correct password with a second factor pending."""
    app, _, _ = security_app(WTF_CSRF_ENABLED=True, WTF_CSRF_CHECK_DEFAULT=False)
    CSRFProtect(app)
    security = app.extensions["security"]
    site = AuditedFlask(app, pg)
    try:
        with app.app_context():
            user = security.datastore.find_user(email=EMAIL)
            security.datastore.tf_set(user, "authenticator", totp_secret=security.totp_factory.generate_totp_secret())
            security.datastore.commit()
        token = site.get("/login", headers={"Accept": "application/json"}).get_json()["response"]["csrf_token"]
        pending = site.open(
            "POST", "/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-CSRF-Token": token}
        )
        assert pending.get_json()["response"]["tf_required"] is True
        refused = site.open("POST", "/login", json={"email": EMAIL, "password": WRONG})  # no CSRF token
        assert refused.status_code == 400
        me = user_ref(site)
        rows = site.rows()
    finally:
        site.close()
    assert_rows(rows, [("login_mfa_pending", me), ("login_failed", None)], PASSWORD, WRONG, token)


def test_a_signed_in_user_posting_the_login_or_signup_form_is_no_auth_event(site: AuditedFlask) -> None:
    """Flask-Security's login and register views turn a signed-in caller away (a redirect) without reading the
    form: no password was checked and nobody signed up, so no ``login_failed`` / ``signup_failed`` names them."""
    login(site)
    assert login(site, WRONG).status_code == 302  # already signed in: sent on, the password never looked at
    form = {"email": "bob@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    assert site.post("/register", form).status_code == 302
    assert_rows(site.rows(), [("login", user_ref(site))], PASSWORD, WRONG)
