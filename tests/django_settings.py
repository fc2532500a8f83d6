"""Settings for every Django test in the process: the example project plus the stacks the glue supports
(the admin, django-allauth with MFA, dj-rest-auth with SimpleJWT), each under its own URL prefix.

Django is configured once per process, so the test modules share these settings; ``django_urls.py`` mounts
the example at ``/accounts/`` (as before), allauth at ``/site/accounts/`` (headless at ``/_allauth/``),
dj-rest-auth at ``/api/auth/`` and the admin at ``/admin/``.
"""

from __future__ import annotations

from django_app.settings import *  # noqa: F403
from django_app.settings import INSTALLED_APPS, MIDDLEWARE

ROOT_URLCONF = "tests.django_urls"
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "django.contrib.admin",
    "django.contrib.messages",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",  # dj_rest_auth.registration imports its models
    "allauth.mfa",
    "allauth.headless",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "dj_rest_auth",
    "dj_rest_auth.registration",
]
MIDDLEWARE = [
    *MIDDLEWARE[:2],
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    *MIDDLEWARE[2:],
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
# One backend (a ModelBackend that also takes e-mails): the example's login() names none.
AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_RATE_LIMITS = False  # the tests fail logins on purpose
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": ["dj_rest_auth.jwt_auth.JWTCookieAuthentication"]}
REST_AUTH = {"TOKEN_MODEL": None, "USE_JWT": True, "SESSION_LOGIN": False, "JWT_AUTH_HTTPONLY": False}
SIMPLE_JWT = {
    "SIGNING_KEY": "tests-only-signing-key-long-enough-for-hs256",  # PyJWT warns under 32 bytes
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}
