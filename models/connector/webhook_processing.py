import re
from collections import Counter

from odoo import models

from ...core.exceptions import WebhookEventUnhandled

_TYPE_SLUG = re.compile(r"[^a-z0-9]+")


class IntegrationConnector(models.Model):
    """Webhook processing: what a stored event does, in its queue job (``webhook`` receives)."""

    _inherit = "integration.connector"

    def _webhook_process_events(self, events):
        """Process many of this connector's events at once where that is cheaper: a batch
        job offers its events here first, then processes the rest one by one through
        ``_webhook_process_event``. Runs in a savepoint: anything raised sends every event
        to the one-by-one path, which gives each its own outcome.

        Here, the events handled by an upsert rule go in bulk (``_upsert_many``). An addon
        that overrides ``_webhook_process_event`` to see every event before the rules does
        not want that: it overrides this method to return ``{}``.

        :return: ``{event id: record or note}`` for the events done
        """
        self.ensure_one()
        Rule = self.env["integration.webhook.rule"]
        by_rule = {}
        rules = {}
        for event in events:
            if event.event_type not in rules:
                rules[event.event_type] = Rule._find(self, event.event_type)
            rule = rules[event.event_type]
            if rule.action_type == "upsert":
                by_rule.setdefault(rule, []).append(event)
        # Two rules writing the same records (say customer.created and customer.updated, both
        # by ref) would each go in bulk, one rule after the other instead of in received order:
        # their events go one by one.
        targets = Counter((rule.model_id, rule.match_field_id) for rule in by_rule)
        done = {}
        for rule, matched in by_rule.items():
            if len(matched) > 1 and targets[rule.model_id, rule.match_field_id] == 1:
                done.update(rule._upsert_many(events.browse([event.id for event in matched])))
        return done

    def _webhook_process_event(self, event):
        """Process one event; extended per ``kind`` by other addons (call ``super()``).

        :return: a record the event produced or touched (linked from the event), a short
            note (str), or None
        :raises WebhookEventUnhandled: nothing handles this event type
        :raises RetryableJobError: a transient failure; the event is tried again later
        Anything else fails the event, with its error, until an operator retries it.
        """
        self.ensure_one()
        rule = self.env["integration.webhook.rule"]._find(self, event.event_type)
        if rule:
            return rule._apply(event)
        slug = _TYPE_SLUG.sub("_", (event.event_type or "").lower()).strip("_")
        handler = getattr(self, f"_webhook_handle_{self.kind}_{slug}", None) if slug else None
        if handler is not None:
            return handler(event)
        raise WebhookEventUnhandled(
            self.env._(
                "No handler for event type %(type)r on connector %(code)s (kind %(kind)s).",
                type=event.event_type or "",
                code=self.code,
                kind=self.kind,
            )
        )
