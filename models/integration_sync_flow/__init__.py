# integration.sync.flow, one chapter per file (see common.IntegrationSyncFlow).
from . import common
from . import actions
from . import schedule
from . import importing
from . import upsert
from . import exporting
from . import batches
from . import messages
