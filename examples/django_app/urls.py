"""django-allauth style account URLs (the audit preset knows them)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("accounts/signup/", views.signup),
    path("accounts/login/", views.login_view),
    path("accounts/logout/", views.logout_view),
    path("accounts/password/reset/", views.password_reset),
    path("accounts/password/reset/key/<str:uidb64>/<str:token>/", views.password_reset_key),
]
