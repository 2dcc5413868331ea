"""Rate limits on the API's expensive requests, counted in Django's cache (shared by every
node when it is Redis: see CACHES in project/settings.py)."""

from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle


class ActionRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle with a scope per action: a view maps its throttled actions (a
    viewset's action, or an APIView's lower-case method) to scopes in `throttle_scopes`,
    because one view may both read a blob (GET) and store one (PUT), each at its own rate.
    Counted per user (per address when anonymous); a refused request is answered 429 with
    Retry-After before the view reads its body."""

    def allow_request(self, request, view):
        action = getattr(view, "action", None) or request.method.lower()
        self.scope = getattr(view, "throttle_scopes", {}).get(action)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return SimpleRateThrottle.allow_request(self, request, view)
