"""URLs of the Django test project (see ``django_settings.py``): each stack mounted the way its docs say."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django_app.urls import urlpatterns as example

urlpatterns = [
    *example,
    path("site/accounts/", include("allauth.urls")),
    path("_allauth/", include("allauth.headless.urls")),
    path("api/auth/", include("dj_rest_auth.urls")),
    path("api/auth/registration/", include("dj_rest_auth.registration.urls")),
    # Django's own views; dj-rest-auth's reset e-mail links to their password_reset_confirm
    path("django/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
