"""Development and demo: embedded defaults (SQLite, SQLite-file broker, file cache, sandbox)."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import (
    CONTENT_SECURITY_POLICY,
    FHIRLINK_APP_RETURN_URIS,
    INSTALLED_APPS,
    OAUTH2_PROVIDER,
    PUBLIC_BASE_URL,
    VAR_DIR,
    env,
)

(VAR_DIR / "static").mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=True)
# Throw-away values for a laptop. Production refuses to start without real ones.
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-do-not-use-in-production")
VAULT_KEYS = env.str("VAULT_KEYS", default="dev-1:ZGV2LW9ubHktaW5zZWN1cmUtdmF1bHQta2V5LTMyYnk=")
VAULT_ACTIVE_KEY_ID = env.str("VAULT_ACTIVE_KEY_ID", default="dev-1")
# The synced-record store's index-hash keys (fhirlink/vault.py, "Keyed index hashes").
FHIRLINK_INDEX_KEYS = env.str(
    "FHIRLINK_INDEX_KEYS", default="dev-index-1:ZGV2LW9ubHktaW5zZWN1cmUtaW5kZXgta2V5LTMyYnk="
)
FHIRLINK_INDEX_ACTIVE_KEY_ID = env.str("FHIRLINK_INDEX_ACTIVE_KEY_ID", default="dev-index-1")

# The /demo/ reference client on http://127.0.0.1 is a loopback redirect (RFC 8252 §7.3).
OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,
    "ALLOWED_REDIRECT_URI_SCHEMES": [*OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"], "http"],
}

# The e-mail printed whole on the console, not through logging (see patientportal/core/mail.py).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="patientportal.core.mail.ConsoleEmailBackend")

# The Cerner sandbox runs as its own origin on SANDBOX_PORT (8001) in the demo.
SANDBOX_ENABLED = True
DEMO_ENABLED = True
INSTALLED_APPS = [*INSTALLED_APPS, "fhirlink.sandbox", "patientportal.demo_client"]
# The /demo/ reference client is an app return URI too: the SMART callback sends the browser
# back to it with the connection id and outcome (patientportal/demo_client).
if f"{PUBLIC_BASE_URL}/demo/" not in FHIRLINK_APP_RETURN_URIS:
    FHIRLINK_APP_RETURN_URIS = [*FHIRLINK_APP_RETURN_URIS, f"{PUBLIC_BASE_URL}/demo/"]

# The sandbox's sign-in form redirects the browser to this origin's SMART callback, and the OAuth
# approval to the /demo/ client, over http on loopback (any port: the demo's, a test's live
# server); Chromium applies form-action to the redirect that follows a form.
CONTENT_SECURITY_POLICY = {
    **CONTENT_SECURITY_POLICY,
    "DIRECTIVES": {
        **CONTENT_SECURITY_POLICY["DIRECTIVES"],
        "form-action": [
            *CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"],
            "http://127.0.0.1:*",
            "http://localhost:*",
        ],
    },
}
