"""Django's 404 and 500 answers: under /api/ the API's one error shape, `{"detail": …}`
(what DRF's exception handler gives, common/api/errors.py), elsewhere Django's pages.

They answer what no DRF view answered: a URL no route matches, a plain Django view's
Http404 (the SSE and long-poll views), and any exception that escaped a view. Django
uses them only with DEBUG off; with DEBUG on it shows its technical pages."""

from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions

API_PREFIX = "/api/"


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def not_found(request, exception):
    """An Http404's own message, as DRF's views give it ("No such job."); the generic one
    for a URL no route matches (Django's resolver passes its routes, not a message)."""
    if _is_api(request):
        said = exception.args[0] if exception.args else None
        detail = said if isinstance(said, str) else exceptions.NotFound.default_detail
        return JsonResponse({"detail": detail}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """No traceback or message of the exception: those go to the log only."""
    if _is_api(request):
        return JsonResponse({"detail": exceptions.APIException.default_detail}, status=500)
    return defaults.server_error(request)
