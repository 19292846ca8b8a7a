import logging

from werkzeug.exceptions import Forbidden, NotFound

from odoo import http
from odoo.http import request

from ..const import OAUTH2_CALLBACK_ROUTE, OAUTH2_CONNECT_ROUTE_PREFIX
from ..core.exceptions import OAuth2StateError
from ..core.redact import QueryStringRedactingFilter

_logger = logging.getLogger(__name__)
# The request line of the callback carries the authorization code: werkzeug logs request
# lines at INFO, so mask sensitive query parameters there (``code`` is one).
logging.getLogger("werkzeug").addFilter(QueryStringRedactingFilter())

OAUTH2_CONNECT_ROUTE = f"{OAUTH2_CONNECT_ROUTE_PREFIX}/<int:connector_id>"


def _session_binding():
    """What ties an authorization to this browser session, without storing the session id."""
    return request.env["integration.connector"]._oauth2_session_binding()


class IntegrationOAuth2Controller(http.Controller):
    """Authorization code grant: send the manager to the provider, take the answer back.

    Both routes are thin: the connector model checks, stores and exchanges.
    """

    @http.route(OAUTH2_CONNECT_ROUTE, type="http", auth="user", methods=["GET"], readonly=False)
    def integration_oauth2_connect(self, connector_id, token=None, **_params):
        """Where the Connect button leads: bind a new authorization to this session, then
        redirect to the provider's authorization URL."""
        connector = request.env["integration.connector"].browse(connector_id).exists()
        if not connector:
            raise NotFound()
        # The link carries a token only Connect hands out, so that another site cannot
        # start a (possibly auto-approved) authorization in a manager's browser.
        if not connector._oauth2_connect_token_valid(token, _session_binding()):
            raise Forbidden()
        return request.redirect(connector._oauth2_authorization_begin(_session_binding()), local=False)

    @http.route(OAUTH2_CALLBACK_ROUTE, type="http", auth="user", methods=["GET"], readonly=False)
    def integration_oauth2_callback(self, state=None, code=None, error=None, error_description=None, **_params):
        """The provider's redirect back: check ``state``, exchange the code, show the result
        on the connector form."""
        try:
            connector = request.env["integration.connector"]._oauth2_authorization_callback(
                _session_binding(), state, code=code, error=error, error_description=error_description
            )
        except OAuth2StateError as exc:
            _logger.warning("OAuth2 callback refused for user %s: %s", request.env.user.login, exc)
            return request.render(
                "integration_hub.integration_oauth2_callback_error", {"message": str(exc)}, status=400
            )
        return request.redirect(f"/odoo/integration.connector/{connector.id}")
