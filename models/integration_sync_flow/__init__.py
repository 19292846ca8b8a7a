# integration.sync.flow, one chapter per file (see common.IntegrationSyncFlow).
from . import common
from . import importing
from . import exporting
