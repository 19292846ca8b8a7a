from . import integration_secret_mixin
from . import integration_connector
from . import integration_oauth_token
