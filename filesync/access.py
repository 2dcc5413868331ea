"""Who may do what: the one place every interface (API, admin, commands) asks.

Someone who is not in a file's team gets a 404, as if the file did not exist, so ids
leak nothing; a member whose role is too low gets a 403.
"""

from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Role


def team_role(user, team_id: UUID) -> Role | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.OWNER
    role = (
        Membership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()
    )
    return Role(role) if role else None


def require_team_role(
    user, team_id: UUID, minimum: Role = Role.VIEWER, *, not_found: str = "No such object."
) -> Role:
    """The user's role, or a 404 saying `not_found`: the words a missing object gets, so
    an outsider cannot tell someone else's object from one that does not exist."""
    role = team_role(user, team_id)
    if role is None:
        raise Http404(not_found)
    if role.rank < minimum.rank:
        raise PermissionDenied(f"This needs the {minimum.label.lower()} role in the team.")
    return role
