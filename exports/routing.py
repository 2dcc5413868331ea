"""WebSocket routes. The export job page's consumer is added here by the delivery work."""

websocket_urlpatterns: list = []
