"""Constants shared by more than one file of the addon (one place to change them)."""

# Security groups (XML ids).
USER_GROUP = "integration_hub.group_integration_user"
MANAGER_GROUP = "integration_hub.group_integration_manager"

# Queue channels, as declared in data/queue_job_data.xml. Jobs are routed by their job
# function's channel (data, editable in Job Queue); code names a channel only when a
# connector's configuration asks for one (see integration.connector._job_delay_params).
CHANNEL_ROOT = "root.integration"
CHANNEL_OUTBOUND = "root.integration.outbound"
CHANNEL_WEBHOOK = "root.integration.webhook"
CHANNEL_SYNC = "root.integration.sync"

# PostgreSQL advisory lock namespaces (the first key of a two-key lock; the second is
# the connector id). Distinct values keep the addon's locks from meeting each other.
LOCK_OAUTH2_REFRESH = 0x1A7E
LOCK_WEBHOOK_SEQUENTIAL = 0x1A7F
LOCK_SYNC_FLOW = 0x1A80
LOCK_WEBHOOK_LINE = 0x1A81  # giving an in-order connector's line its next job

# The inbound webhook route: POST WEBHOOK_ROUTE_PREFIX/<connector code>.
WEBHOOK_ROUTE_PREFIX = "/integration/webhook"
# OAuth2 authorization code grant: Connect leads to OAUTH2_CONNECT_ROUTE_PREFIX/<connector
# id>, which redirects to the provider; the provider redirects back to the callback, the
# redirect URI a manager registers at the provider (<web.base.url> + this path).
OAUTH2_CONNECT_ROUTE_PREFIX = "/integration/oauth2/connect"
OAUTH2_CALLBACK_ROUTE = "/integration/oauth2/callback"
# RFC 7523: the grant type of a JWT bearer assertion exchanged at a token endpoint.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

# Seconds a sender is told to wait (Retry-After) while a connector's webhooks are paused.
PAUSED_RETRY_AFTER = 120
# Seconds a sender is told to wait (503) when a delivery finds the database unreachable.
DATABASE_DOWN_RETRY_AFTER = 5

# Encryption keys of the secrets: an environment variable, else an option of the
# configuration file ([options] section); comma-separated Fernet keys, newest first.
KEYS_ENV_VARIABLE = "INTEGRATION_HUB_ENCRYPTION_KEYS"
KEYS_CONFIG_OPTION = "integration_hub_encryption_keys"

# The identity key of the webhook dispatcher job (one waits at a time).
DISPATCH_IDENTITY_KEY = "integration.webhook.event:dispatch"

# Prometheus metrics: GET METRICS_ROUTE with "Authorization: Bearer <token>"; the SHA-256 of
# the token (hex) is kept in this system parameter (none: the route answers 404).
METRICS_ROUTE = "/integration/metrics"
METRICS_TOKEN_PARAM = "integration_hub.metrics_token_sha256"

# Structured logs: one line per outbound call on CALL_LOGGER (under the connector's
# package, so muting the connector's logger mutes it too), as key=value text or, with
# the option set to "json", as a JSON object. An environment variable, else an option of
# the configuration file ([options] section).
CALL_LOGGER = "odoo.addons.integration_hub.models.connector.calls"
LOG_FORMAT_ENV_VARIABLE = "INTEGRATION_HUB_LOG_FORMAT"
LOG_FORMAT_CONFIG_OPTION = "integration_hub_log_format"
# Error tracking: terminal call failures sent to Sentry when sentry-sdk is installed and
# a DSN is set (environment variable, else configuration file option).
SENTRY_DSN_ENV_VARIABLE = "INTEGRATION_HUB_SENTRY_DSN"
SENTRY_DSN_CONFIG_OPTION = "integration_hub_sentry_dsn"
