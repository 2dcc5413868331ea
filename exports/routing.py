from django.urls import path

from .consumers import ImportEventsConsumer, JobEventsConsumer

websocket_urlpatterns = [
    path("ws/exports/<uuid:job_id>/", JobEventsConsumer.as_asgi()),
    path("ws/imports/<uuid:job_id>/", ImportEventsConsumer.as_asgi()),
]
