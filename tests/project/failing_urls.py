"""Ferry's URLs plus a view, under /api/ and outside, that fails as a bug would."""

from django.urls import path

from project.urls import handler404, handler500
from project.urls import urlpatterns as ferry_urlpatterns


def broken(request):
    raise RuntimeError("a bug's message, with a path: /srv/ferry/settings.py")


urlpatterns = [path("api/broken", broken), path("broken", broken), *ferry_urlpatterns]
__all__ = ["handler404", "handler500", "urlpatterns"]
