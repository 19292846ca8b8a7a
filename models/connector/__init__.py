# integration.connector, one chapter per file (see common.IntegrationConnector).
from . import common
from . import auth
from . import call
from . import oauth2
from . import reliability
from . import monitoring
from . import webhook
