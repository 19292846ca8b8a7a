from . import integration_webhook_retry_wizard
