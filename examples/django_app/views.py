"""Login, logout and password reset on ``django.contrib.auth``; JSON or form bodies."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import authenticate, get_user_model, login, logout
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from audit_middleware import audit_context

LAST_RESET_LINK: list[str] = []  # for run.py --demo only


def _data(request: HttpRequest) -> dict[str, Any] | QueryDict:
    if request.content_type == "application/json":
        loaded = json.loads(request.body or b"{}")
        return loaded if isinstance(loaded, dict) else {}
    return request.POST


@csrf_exempt
@require_POST
def signup(request: HttpRequest) -> HttpResponse:
    data = _data(request)
    if User.objects.filter(username=data.get("username", "")).exists():
        return JsonResponse({"error": "taken"}, status=400)
    user = User.objects.create_user(data.get("username", ""), data.get("email", ""), data.get("password", ""))
    login(request, user)
    return JsonResponse({"id": user.pk}, status=201)


@csrf_exempt
@require_POST
def login_view(request: HttpRequest) -> HttpResponse:
    data = _data(request)
    user = authenticate(request, username=data.get("username", ""), password=data.get("password", ""))
    if user is None:
        return JsonResponse({"error": "bad credentials"}, status=400)
    login(request, user)  # DjangoAuditMiddleware sees request.user after the view
    return JsonResponse({"status": "ok"})


@csrf_exempt
@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)  # DjangoAuditMiddleware took request.user before the view
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def password_reset(request: HttpRequest) -> HttpResponse:
    email = _data(request).get("email", "")
    audit_context(request).update(method="email_link")  # the seed's example metadata
    user = get_user_model().objects.filter(email=email).first()
    if user is not None:
        uid = urlsafe_base64_encode(force_bytes(user.pk))
        link = f"/accounts/password/reset/key/{uid}/{default_token_generator.make_token(user)}/"
        audit_context(request).set_user(user.pk)
        print(f"[mail] reset link for {email}: {link}")
        LAST_RESET_LINK[:] = [link]
    return HttpResponse(status=202)


@csrf_exempt
@require_POST
def password_reset_key(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    try:
        user = get_user_model().objects.get(pk=urlsafe_base64_decode(uidb64).decode())
    except (ValueError, get_user_model().DoesNotExist):
        return JsonResponse({"error": "bad link"}, status=400)
    if not default_token_generator.check_token(user, token):
        return JsonResponse({"error": "bad link"}, status=400)
    user.set_password(_data(request).get("password", ""))
    user.save()
    audit_context(request).update(user=user.pk, method="email_link")
    return JsonResponse({"status": "password updated"})
