"""baton's live pages: ``path("baton/", include("baton.urls"))``.

The WebSockets they open are in baton/routing.py (``websocket_urlpatterns``).
"""

from django.urls import path

from baton.live import actions, views

app_name = "baton"

urlpatterns = [
    path("", views.workflow_list, name="workflows"),
    path("<uuid:workflow_id>/", views.workflow_detail, name="workflow"),
    path("<uuid:workflow_id>/actions/", actions.workflow_action, name="workflow-action"),
    path("<uuid:workflow_id>/timeline/", views.workflow_timeline, name="workflow-timeline"),
]
