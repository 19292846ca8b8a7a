# integration.webhook.event, one chapter per file (see common.IntegrationWebhookEvent).
from . import common
from . import inbox
from . import dispatch
from . import processing
