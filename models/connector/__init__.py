# integration.connector, one chapter per file (see common.IntegrationConnector).
from . import common
from . import auth
from . import call
from . import oauth2
from . import oauth2_connect
from . import jwt
from . import reliability
from . import monitoring
from . import webhook
from . import sync
from . import health
from . import probe
from . import dashboard
from . import alerting
from . import prometheus
from . import logs
from . import demo
