import hashlib
import json
import logging
import weakref

import psycopg2.errors

from odoo import api, fields, models

from ...const import DISPATCH_IDENTITY_KEY
from ...core.autocommit import AutocommitPool
from ...core.jsonutil import payload_text
from ...core.redact import redact_headers, redact_text
from ...core.textsafe import EVENT_TYPE_LIMIT, bounded_text, clean_text, unique_key
from ..integration_connector_state import connect, state_cursor

_logger = logging.getLogger(__name__)

# Profiles whose signature does not cover the event id: the body must be unique as well.
UNSIGNED_ID_PROFILES = frozenset({"github", "shopify", "hmac_sha256"})

# Headers never worth keeping with an event (hop-by-hop, or identical on every delivery).
_SKIPPED_HEADERS = frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "host", "accept-encoding"}
)


# The inbox's one statement per delivery: the look-up, the insert, and whether a dispatcher
# waits. An event already stored is looked up first and not inserted again: inserting its key
# would wait for whatever transaction (its job, say) has written the stored row and not
# committed yet. The look-up is two probes, one per unique index (an OR of the two would let
# a plan scan all of the connector's events). No "created by": nobody in Odoo did, and a NULL
# skips a foreign-key check. A stored event still received 10 s after it came, with no dispatcher waiting, lost the
# dispatcher its first delivery queued (in a request that failed after the event committed):
# a repeated delivery queues one again. (Within those seconds the first request is still
# committing its dispatcher.)
_INGEST_PARAMS = (
    ("connector_id", "int4"),
    ("company_id", "int4"),
    ("event_id", "varchar"),
    ("event_type", "varchar"),
    ("signed_at", "timestamp"),
    ("remote_addr", "varchar"),
    ("headers", "text"),
    ("payload", "text"),
    ("payload_is_base64", "bool"),
    ("payload_size", "int4"),
    ("payload_hash", "varchar"),
    ("dispatch_key", "varchar"),
)

_INGEST_TEMPLATE = """
    WITH stored AS (
        SELECT id, state = 'received' AND received_at < (now() AT TIME ZONE 'UTC') - interval '10 seconds'
                   AS undispatched
          FROM ((SELECT id, state, received_at FROM integration_webhook_event
                  WHERE connector_id = {connector_id} AND event_id = {event_id} LIMIT 1)
                UNION ALL
                (SELECT id, state, received_at FROM integration_webhook_event
                  WHERE connector_id = {connector_id} AND payload_hash = {payload_hash} LIMIT 1)) AS found
         LIMIT 1),
    inserted AS (
        INSERT INTO integration_webhook_event (
            connector_id, company_id, event_id, event_type, signed_at, remote_addr, headers,
            payload, payload_is_base64, payload_size, payload_hash, state, attempts,
            received_at, create_date, write_date)
        SELECT {connector_id}, {company_id}, {event_id}, {event_type}, {signed_at}, {remote_addr}, {headers},
               {payload}, {payload_is_base64}, {payload_size}, {payload_hash}, 'received', 0,
               now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
         WHERE NOT EXISTS (SELECT 1 FROM stored)
        ON CONFLICT DO NOTHING
        RETURNING id)
    SELECT (SELECT id FROM inserted),
           EXISTS (SELECT 1 FROM queue_job WHERE identity_key = {dispatch_key}
                      AND state IN ('wait_dependencies', 'pending', 'enqueued')),
           (SELECT undispatched FROM stored)
"""

# In the caller's transaction, with psycopg2's named parameters.
_INGEST_SQL = _INGEST_TEMPLATE.format(**{name: f"%({name})s" for name, _type in _INGEST_PARAMS})

# Prepared once per inbox connection, with typed positional parameters.
_INGEST_STATEMENT = "integration_webhook_ingest"

_INGEST_PREPARED = (
    [sql_type for _name, sql_type in _INGEST_PARAMS],
    _INGEST_TEMPLATE.format(**{name: f"${number}" for number, (name, _type) in enumerate(_INGEST_PARAMS, 1)}),
)

_INGEST_EXECUTE = "EXECUTE {}({})".format(_INGEST_STATEMENT, ", ".join(["%s"] * len(_INGEST_PARAMS)))

# The inbox connections: durable commits (an event is answered 202 only once it is on disk).
# The prepared statement keeps one generic plan for the session's life, made from the
# statistics of the moment: made while the events or jobs table was empty, it would scan the
# whole table on every delivery once it has grown, until an ANALYZE happens to replan it.
# Every look-up of the statement (and of its foreign-key checks) is an equality on a unique
# or partial index, so these sessions do without sequential scans: the plan stays an index
# probe whatever the statistics said when it was made.
_inbox_pool = AutocommitPool(
    connect,
    settings=["SET application_name TO 'integration_hub webhook inbox'", "SET enable_seqscan TO off"],
    prepared={_INGEST_STATEMENT: _INGEST_PREPARED},
)

# Inbox connections whose prepared statement went missing (see _ingest).
_unprepared_sessions = weakref.WeakSet()


class IntegrationWebhookEvent(models.Model):
    """The inbox: ``_ingest`` stores a verified delivery once, on the sender's clock."""

    _inherit = "integration.webhook.event"

    @api.model
    def _ingest(self, connector, body, headers, event_id, event_type, signed_at=None, remote_addr=None, commit=False):
        """Store a verified delivery once and make sure a dispatcher job will queue its
        processing job.

        The per-event job is created by the dispatcher (``_job_dispatch_received``), in
        batches, so that the request costs one statement: senders are waiting.

        :param connector: the connector's ``WebhookReceiver`` (``_webhook_receiver``)
        :param commit: store and commit the event at once on an inbox connection of its own
            (the route), with a statement prepared once per connection, instead of in the
            caller's transaction; the dispatcher job, when one is needed, is still queued in
            the caller's transaction (should that one fail, a repeated delivery or the
            dispatch cron queues it again)
        :return: ``(event id, True)`` when stored now, ``(event id, False)`` for a duplicate
            of an event already stored (not stored again; counted, and no new processing job)
        """
        payload, is_base64 = payload_text(body)  # base64 unless PostgreSQL can store it as text
        values = {
            "connector_id": connector.id,
            "company_id": connector.company_id,
            # Sender-chosen text made storable and bounded (unchanged when already so).
            "event_id": unique_key(event_id),
            "event_type": bounded_text(event_type, EVENT_TYPE_LIMIT) or None,
            "signed_at": fields.Datetime.to_string(signed_at) if signed_at else None,
            "remote_addr": clean_text(remote_addr or "")[:64] or None,
            "headers": json.dumps(_kept_headers(connector, headers), sort_keys=True),
            "payload": payload,
            "payload_is_base64": is_base64,
            "payload_size": len(body),
            "payload_hash": hashlib.sha256(body).hexdigest()
            if connector.webhook_signature in UNSIGNED_ID_PROFILES
            else None,
            "dispatch_key": DISPATCH_IDENTITY_KEY,
        }
        if commit:
            # Autocommit, read-committed: a concurrent delivery of the same event waits for
            # ours at the unique index, then finds it there (ON CONFLICT DO NOTHING).
            with _inbox_pool.cursor(self.env.cr.dbname) as cr:
                if cr.connection in _unprepared_sessions:
                    cr.execute(_INGEST_SQL, values)
                else:
                    try:
                        cr.execute(_INGEST_EXECUTE, [values[name] for name, _type in _INGEST_PARAMS])
                    except psycopg2.errors.InvalidSqlStatementName:
                        # The session lost its prepared statement (a pooler in transaction
                        # mode between Odoo and PostgreSQL, a DISCARD): from now on, this
                        # connection runs the same statement unprepared.
                        _unprepared_sessions.add(cr.connection)
                        cr.execute(_INGEST_SQL, values)
                record_id, dispatcher_waiting, undispatched = cr.fetchone()
            committed_elsewhere = True
        else:
            cr = self.env.cr
            committed_elsewhere = False
            try:
                with cr.savepoint(flush=False):
                    cr.execute(_INGEST_SQL, values, log_exceptions=False)  # a concurrent duplicate is expected
                    record_id, dispatcher_waiting, undispatched = cr.fetchone()
            except psycopg2.errors.SerializationFailure:
                # The same event was stored by a transaction that committed after ours began.
                record_id, dispatcher_waiting, undispatched, committed_elsewhere = None, True, False, True
        if record_id is None:
            duplicate_of = self._count_duplicate(
                connector.id, values["event_id"], values["payload_hash"], committed_elsewhere=committed_elsewhere
            )
            if undispatched and not dispatcher_waiting:
                self._schedule_dispatch()
            return duplicate_of, False
        if not dispatcher_waiting:
            self._schedule_dispatch()
        return record_id, True

    @api.model
    def _count_duplicate(self, connector_id, event_id, payload_hash=None, committed_elsewhere=False):
        """Count one more delivery of a stored event; returns the event's id.

        The count goes to ``integration.webhook.duplicate``, never to the event row, which
        the event's job may be writing at the same moment.
        """
        query = """
            INSERT INTO integration_webhook_duplicate AS d (event_id, count, last_at)
            SELECT id, 1, now() AT TIME ZONE 'UTC' FROM integration_webhook_event
             WHERE connector_id = %s AND (event_id = %s OR payload_hash = %s)
             ORDER BY id LIMIT 1
            ON CONFLICT (event_id) DO UPDATE SET count = d.count + 1, last_at = EXCLUDED.last_at
            RETURNING event_id
        """
        if not committed_elsewhere:
            try:
                with self.env.cr.savepoint(flush=False):
                    self.env.cr.execute(query, [connector_id, event_id, payload_hash], log_exceptions=False)
                    row = self.env.cr.fetchone()
                    return row and row[0]
            except psycopg2.errors.SerializationFailure:
                # Another delivery was counted meanwhile: count on a connection that sees it.
                _logger.debug("Duplicate of %s counted through the shared-state connection", event_id)
        # Autocommit, read-committed: sees the committed event and never fails to serialize.
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(query, [connector_id, event_id, payload_hash])
            row = cr.fetchone()
        return row and row[0]


def _kept_headers(connector, headers):
    kept = {}
    for name, value in headers.items():
        if name.lower() in _SKIPPED_HEADERS or name.lower().startswith("x-forwarded"):
            continue
        kept[name] = redact_text(value, limit=500)
    # The connector's own signature header may have any name (e.g. X-Acme-Sig): masked too.
    return redact_headers(kept, extra_names=(connector.webhook_hmac_header,))
