"""What the webhook route reads of a connector, as a plain value (no ORM on the hot path)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class WebhookReceiver:
    """The webhook settings of one connector, as read by the route (see ``_webhook_receiver``)."""

    COLUMNS = (
        "id",
        "code",
        "company_id",
        "webhook_signature",
        "webhook_paused",
        "webhook_max_body_kib",
        "webhook_tolerance",
        "webhook_secret_encrypted",
        "webhook_secret_previous_encrypted",
        "webhook_hmac_header",
        "webhook_hmac_encoding",
        "webhook_hmac_prefix",
        "webhook_hmac_timestamp_header",
        "webhook_id_header",
        "webhook_id_path",
        "webhook_type_header",
        "webhook_type_path",
    )

    id: int
    code: str
    company_id: int
    webhook_signature: str
    webhook_paused: bool
    webhook_max_body_kib: int
    webhook_tolerance: int
    webhook_secret_encrypted: str | None
    webhook_secret_previous_encrypted: str | None
    webhook_hmac_header: str | None
    webhook_hmac_encoding: str | None
    webhook_hmac_prefix: str | None
    webhook_hmac_timestamp_header: str | None
    webhook_id_header: str | None
    webhook_id_path: str | None
    webhook_type_header: str | None
    webhook_type_path: str | None

    @property
    def max_body_bytes(self):
        return max(1, self.webhook_max_body_kib or 1024) * 1024


# Connector fields whose change must reach the route's cached receivers at once (the
# signing secrets' input fields too: writing one, even False to clear it, changes a column).
RECEIVER_FIELDS = frozenset(WebhookReceiver.COLUMNS) | {"active", "webhook_secret", "webhook_secret_previous"}
