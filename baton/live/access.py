"""Who may see baton's live pages and act on them: staff or ``baton.view_workflow`` to
look, ``baton.change_workflow`` to cancel and retry. The sockets (consumers.py) ask the
same questions."""

from __future__ import annotations

from typing import Any

from django.conf import global_settings
from django.conf import settings as django_settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse

VIEW_PERMISSION = "baton.view_workflow"
CHANGE_PERMISSION = "baton.change_workflow"


def can_view(user: Any) -> bool:
    """Staff, or a user with the baton.view_workflow permission (directly or by group)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_staff or user.has_perm(VIEW_PERMISSION))


def can_change(user: Any) -> bool:
    """Who may cancel and retry from the page: the baton.change_workflow permission
    (superusers have it); staff status alone is not enough."""
    return can_view(user) and bool(user.has_perm(CHANGE_PERMISSION))


def login_url() -> str:
    # A project that set LOGIN_URL gets its own login page; otherwise the admin's, which
    # any project using baton's pages has (they are for staff).
    if django_settings.LOGIN_URL != global_settings.LOGIN_URL:
        return str(django_settings.LOGIN_URL)
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return str(django_settings.LOGIN_URL)


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the user may look; else the login redirect. Raises 403 for the rest."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), login_url())
    if not can_view(request.user):
        raise PermissionDenied("You need staff status or the baton.view_workflow permission.")
    return None
