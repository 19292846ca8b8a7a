from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from odoo import models
from odoo.http import request

from ..core.exceptions import WebhookBodyTimeout

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
DEFAULT_LIMIT = 1024 * 1024


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _pre_dispatch(cls, rule, args):
        result = super()._pre_dispatch(rule, args)
        if rule.endpoint.routing.get("integration_webhook"):
            cls._integration_webhook_buffer_body(args.get("code"))
        return result

    @classmethod
    def _integration_webhook_buffer_body(cls, code):
        """Keep the raw body of a webhook delivery before Odoo parses a form out of it.

        Odoo reads form bodies (urlencoded, multipart) into parameters before the route
        runs, which consumes them; signatures are computed on the raw bytes. A body within
        the connector's size limit is buffered here, at the route's minimum pace (the form
        parser then reads the buffer); a larger one is refused here with the route's 413,
        unread, a trickling one with its 408.
        """
        httprequest = request.httprequest
        length = httprequest.content_length
        if not length or httprequest.mimetype not in FORM_TYPES:
            return  # not a form: Odoo will not parse it, the route reads and limits it
        receiver = request.env["integration.connector"].sudo()._webhook_receiver(code)
        limit = receiver.max_body_bytes if receiver else DEFAULT_LIMIT
        # The controller imports models: imported here, when a webhook is served.
        from ..controllers.webhook import body_timeout_reply, buffer_body, too_large_reply  # noqa: PLC0415

        if length > limit:
            raise RequestEntityTooLarge(response=too_large_reply(code, limit))
        try:
            buffer_body(httprequest)
        except WebhookBodyTimeout as exc:
            raise RequestTimeout(response=body_timeout_reply(code, exc)) from None
