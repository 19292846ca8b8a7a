from . import test_core
from . import test_connector_auth
from . import test_connector_secrets
from . import test_connector_config
from . import test_access
from . import test_outbound
from . import test_tour
