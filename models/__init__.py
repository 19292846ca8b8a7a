from . import integration_secret_mixin
from . import integration_connector_state
from . import integration_connector_metric
from . import integration_connector
from . import integration_oauth_token
from . import integration_error
from . import integration_call_log
