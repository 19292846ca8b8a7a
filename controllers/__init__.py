from . import webhook
from . import oauth2
