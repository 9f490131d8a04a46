from importlib.util import find_spec

from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls)]

# The live pages (baton.urls) are still being written: mount them once the module exists.
# find_spec rather than `except ImportError`, so a real import error inside baton.urls
# still shows up instead of silently hiding the pages.
if find_spec("baton.urls") is not None:
    urlpatterns.append(path("baton/", include("baton.urls")))
