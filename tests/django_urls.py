"""URLs of the Django test project (see ``django_settings.py``): each stack mounted the way its docs say."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django_app.urls import urlpatterns as example

urlpatterns = [
    *example,
    path("site/accounts/", include("allauth.urls")),
    path("api/auth/", include("dj_rest_auth.urls")),
    path("api/auth/registration/", include("dj_rest_auth.registration.urls")),
    path("admin/", admin.site.urls),
]
