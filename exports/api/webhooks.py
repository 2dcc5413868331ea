"""The user's webhook secret: made (or rotated) by a POST that shows it once; a GET only
says whether there is one and since when."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..selectors import webhook_secret_for


class WebhookSecretView(APIView):
    """The key your exports' callbacks are signed with (Standard Webhooks)."""

    @extend_schema(responses={200: OpenApiResponse(description="{exists, created_at}")})
    def get(self, request):
        secret = webhook_secret_for(request.user)
        return Response(
            {"exists": secret is not None, "created_at": secret.created_at if secret else None}
        )

    @extend_schema(
        request=None,
        responses={201: OpenApiResponse(description="{secret, created_at}: the only showing")},
    )
    def post(self, request):
        """Make a new secret, replacing any earlier one; the answer is the only place it shows."""
        secret, value = services.issue_webhook_secret(user=request.user)
        response = Response(
            {"secret": value, "created_at": secret.created_at}, status=status.HTTP_201_CREATED
        )
        response["Cache-Control"] = "no-store"
        return response
