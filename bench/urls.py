"""No views, unless the bench settings install the admin (BENCH_ADMIN, bench/scale.py):
then the admin and baton's live pages, which bench/scale.py times."""

from django.apps import apps
from django.urls import include, path

urlpatterns: list[object] = []
if apps.is_installed("django.contrib.admin"):
    from django.contrib import admin

    urlpatterns = [path("admin/", admin.site.urls), path("baton/", include("baton.urls"))]
