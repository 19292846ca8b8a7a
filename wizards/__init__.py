from . import integration_webhook_retry_wizard
from . import integration_sync_cursor_wizard
