"""URLs of the Django test project (see ``django_settings.py``): each stack mounted the way its docs say."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django_app.urls import urlpatterns as example


def reset_link_page(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """The front-end page dj-rest-auth's reset e-mail links to (it reverses ``password_reset_confirm``)."""
    return HttpResponse("set a new password")


urlpatterns = [
    *example,
    path("site/accounts/", include("allauth.urls")),
    path("_allauth/", include("allauth.headless.urls")),
    path("api/auth/", include("dj_rest_auth.urls")),
    path("api/auth/registration/", include("dj_rest_auth.registration.urls")),
    path("reset/<str:uidb64>/<str:token>/", reset_link_page, name="password_reset_confirm"),
    path("admin/", admin.site.urls),
]
