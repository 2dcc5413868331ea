"""The exports app's admin, one module per screen, each importing the shared `jobs` base
(never the reverse): export jobs and the "Export as binfile" action (`exports`, `actions`),
import jobs and a project's "Import binfile" page (`imports`), webhook secrets
(`webhooks`). Django's autodiscover imports this package; importing the modules here
registers their admins.
"""

from . import exports, imports, webhooks  # noqa: F401
