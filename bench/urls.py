"""No views: the bench settings need a URLconf only to satisfy Django."""

urlpatterns: list[object] = []
