from . import webhook
from . import oauth2
from . import metrics
