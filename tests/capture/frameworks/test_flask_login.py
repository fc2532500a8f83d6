"""The Flask-Login tutorial app behind AuditWSGIMiddleware + install_flask, rows in PostgreSQL.

The classic quickstart (Flask-SQLAlchemy users with integer ids, werkzeug password hashes): a wrong
password flashes and redirects back to ``/login``, a success redirects to ``/profile``; a duplicate
sign-up redirects back to ``/signup``, a new one to ``/login``; ``GET /logout`` is ``@login_required``.
Every outcome is a 302, so the status says nothing: Flask-Login's signals and the redirect target do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, flash, redirect, request, url_for
from flask_login import LoginManager, UserMixin, confirm_login, current_user, login_user, logout_user
from flask_login import login_required as _login_required
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import check_password_hash, generate_password_hash

from audit_middleware import install_flask
from tests.conftest import PgTarget
from tests.flask_helpers import AuditedFlask, assert_rows

EMAIL = "ann@example.com"
PASSWORD = "correct horse battery staple"
WRONG = "wrong-guess-1234"
login_required: Callable[[Callable[..., Any]], Callable[..., Any]] = _login_required  # (Flask-Login is untyped)


def tutorial_app() -> Flask:
    """The tutorial's app factory (its templates replaced by short strings)."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="tutorial-secret-key-for-tests", SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy(app)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String(100), unique=True)
        password = db.Column(db.String(200))
        name = db.Column(db.String(1000))

    login_manager = LoginManager()
    login_manager.login_view = "auth.login"
    login_manager.init_app(app)

    def load_user(user_id: str) -> Any:
        return db.session.get(User, int(user_id))

    login_manager.user_loader(load_user)

    main = Blueprint("main", __name__)

    @main.route("/")
    def index() -> str:
        return "Home"

    @main.route("/profile")
    @login_required
    def profile() -> str:
        return f"Welcome, {current_user.name}!"

    auth = Blueprint("auth", __name__)

    @auth.route("/login")
    def login() -> str:
        return "<form method=post>...</form>"

    @auth.route("/login", methods=["POST"])
    def login_post() -> Any:
        user = User.query.filter_by(email=request.form.get("email")).first()
        if not user or not check_password_hash(user.password, request.form.get("password", "")):
            flash("Please check your login details and try again.")
            return redirect(url_for("auth.login"))
        login_user(user, remember=bool(request.form.get("remember")))
        return redirect(url_for("main.profile"))

    @auth.route("/signup")
    def signup() -> str:
        return "<form method=post>...</form>"

    @auth.route("/signup", methods=["POST"])
    def signup_post() -> Any:
        email = request.form.get("email")
        if User.query.filter_by(email=email).first():
            flash("Email address already exists")
            return redirect(url_for("auth.signup"))
        password = generate_password_hash(request.form.get("password", ""), method="pbkdf2:sha256:1000")
        db.session.add(User(email=email, name=request.form.get("name"), password=password))
        db.session.commit()
        return redirect(url_for("auth.login"))

    @auth.route("/reauthenticate", methods=["POST"])  # Flask-Login's "fresh login" pattern
    @login_required
    def reauthenticate() -> Any:
        if not check_password_hash(current_user.password, request.form.get("password", "")):
            flash("Wrong password.")
            return redirect(url_for("auth.reauthenticate"))
        confirm_login()
        return redirect(url_for("main.profile"))

    @auth.route("/logout")
    @login_required
    def logout() -> Any:
        logout_user()
        return redirect(url_for("main.index"))

    app.register_blueprint(auth)
    app.register_blueprint(main)
    with app.app_context():
        db.create_all()
    return app


@pytest.fixture
def site(pg: PgTarget) -> Iterator[AuditedFlask]:
    audited = AuditedFlask(tutorial_app(), pg)
    yield audited
    audited.close()


def signup(site: AuditedFlask) -> Any:
    return site.post("/signup", {"email": EMAIL, "name": "Ann", "password": PASSWORD})


def test_wrong_password_and_success_both_302_are_told_apart(site: AuditedFlask) -> None:
    signup(site)
    assert site.post("/login", {"email": EMAIL, "password": WRONG}).headers["Location"] == "/login"
    assert site.post("/login", {"email": "nobody@example.com", "password": WRONG}).headers["Location"] == "/login"
    assert site.post("/login", {"email": EMAIL, "password": PASSWORD, "remember": "y"}).status_code == 302
    rows = site.rows()
    assert_rows(
        rows[1:],
        [("login_failed", None), ("login_failed", None), ("login", "1")],  # integer id: metadata.user_ref
        PASSWORD,
        WRONG,
        site.cookie("session"),
        site.cookie("remember_token"),
    )
    assert rows[3].metadata["auth"] == {"source": "flask_login.user_logged_in", "evidence": ["login"]}


def test_duplicate_signup_redirected_back_is_signup_failed(site: AuditedFlask) -> None:
    assert signup(site).headers["Location"] == "/login"
    assert signup(site).headers["Location"] == "/signup"  # the form again
    assert_rows(site.rows(), [("signup", None), ("signup_failed", None)], PASSWORD)


def test_logout_names_the_user_and_an_anonymous_logout_is_no_row(site: AuditedFlask) -> None:
    signup(site)
    site.post("/login", {"email": EMAIL, "password": PASSWORD})
    session_cookie = site.cookie("session")
    assert site.get("/logout").status_code == 302
    assert site.get("/logout").headers["Location"].startswith("/login")  # login_required: nothing happened
    assert_rows(site.rows()[1:], [("login", "1"), ("logout", "1")], session_cookie)


def test_a_login_path_no_view_takes_is_no_auth_event(site: AuditedFlask) -> None:
    assert site.post("/login/", {"email": EMAIL, "password": WRONG}).status_code == 404  # the rule is /login
    assert site.post("/logout").status_code == 405  # the tutorial logs out on GET
    assert site.rows() == []


def test_installing_the_glue_twice_reports_each_event_once(site: AuditedFlask) -> None:
    install_flask(site.app)
    signup(site)
    site.post("/login", {"email": EMAIL, "password": PASSWORD})
    assert site.rows()[1].metadata["auth"]["evidence"] == ["login"]


def test_a_fresh_login_confirmation_is_reauthenticate(site: AuditedFlask) -> None:
    signup(site)
    site.post("/login", {"email": EMAIL, "password": PASSWORD})
    site.post("/reauthenticate", {"password": WRONG})
    site.post("/reauthenticate", {"password": PASSWORD})
    assert_rows(site.rows()[1:], [("login", "1"), ("reauthenticate", "1")], PASSWORD, WRONG)


def test_an_anonymous_call_to_a_logout_view_without_login_required_is_no_logout(pg: PgTarget) -> None:
    """Flask-Login's own README logs out without ``@login_required``; ``logout_user()`` then announces
    ``user_logged_out`` for the anonymous user. Nobody was signed out: no row."""
    app = tutorial_app()

    @app.route("/signout")
    def signout() -> str:
        logout_user()
        return "Logged out"

    site = AuditedFlask(app, pg)
    try:
        signup(site)
        assert site.get("/signout").status_code == 200  # nobody signed in
        site.post("/login", {"email": EMAIL, "password": PASSWORD})
        assert site.get("/signout").status_code == 200
        rows = site.rows()
    finally:
        site.close()
    assert_rows(rows[1:], [("login", "1"), ("logout", "1")], PASSWORD)
