import logging

from odoo import api, fields, models, tools
from odoo.exceptions import ValidationError

from ...core.mapper import remote_value
from ..integration_webhook_rule import _is_protected_model

_logger = logging.getLogger(__name__)

# The partner's absolute maximum items per request: the retail portal's is 1,000.
DEFAULT_REMOTE_MAX_BATCH = 1000
# Windows planned by one Sync (catch-up after downtime plans the rest on the next one).
MAX_WINDOWS_PER_PLAN = 500


class IntegrationSyncFlow(models.Model):
    """What one connector synchronises for one Odoo model, in one direction, and how.

    - **import**: remote -> Odoo, pulled in time windows of the remote's last-change stamp,
      page by page, with a checkpoint after every page (``importing.py``);
    - **export**: Odoo -> remote, records changed since the last export (``write_date``) and
      tombstones of deleted ones, cut into batches by count and bytes, sent as a list (with
      ``202`` + job polling) or as numbered messages with a summary (``exporting.py``).

    Records are matched through ``integration.binding``; values through the field map (the
    mapper webhook rules use). Code hooks, on the connector (by kind) for what a map cannot say:

    - ``_sync_map_<kind>_<flow code>(flow, document, values)`` -> values: import, after the map;
    - ``_sync_render_<kind>_<flow code>(flow, record, document)`` -> document: export, after
      the map (``document`` already holds the mapped values and the remote id).

    Every run is an ``integration.sync.run`` (one per window or batch) with counts and state.
    """

    _name = "integration.sync.flow"
    _description = "Sync Flow"
    _inherit = ["mail.thread"]
    _order = "connector_id, sequence, id"

    # Identity
    name = fields.Char(required=True, tracking=True)
    code = fields.Char(
        required=True,
        help="Short identifier, unique per connector (lowercase letters, digits, '_'); names code hooks.",
    )
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True, tracking=True)
    is_paused = fields.Boolean(
        string="Paused", tracking=True, help="A paused flow is not scheduled and its queued runs wait."
    )
    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True, index=True)
    direction = fields.Selection(
        [("import", "Import (remote to Odoo)"), ("export", "Export (Odoo to remote)")],
        required=True,
        default="import",
        tracking=True,
    )
    model_id = fields.Many2one(
        "ir.model",
        string="Odoo Model",
        required=True,
        ondelete="cascade",
        domain="[('transient', '=', False), ('model', 'not like', 'ir.%'), "
        "('model', 'not in', ('res.users', 'res.groups', 'res.users.apikeys'))]",
    )
    model_name = fields.Char(related="model_id.model", string="Model Name", store=True, index=True)
    remote_path = fields.Char(
        string="Remote Resource",
        required=True,
        help="Path under the connector's base URL: the list to pull (import) or where batches or "
        "messages are posted (export).",
    )
    mode = fields.Selection(
        [("incremental", "Incremental"), ("full", "Full every run")],
        default="incremental",
        required=True,
        help="Incremental: from the cursor on. Full: every run reads everything (small reference data).",
    )
    user_id = fields.Many2one(
        "res.users",
        string="Run As",
        required=True,
        ondelete="restrict",
        default=lambda self: self.env.user,
        domain="[('share', '=', False)]",
        help="Records are read and written with this user's access rights, in the connector's company. "
        "Only a Settings administrator may choose another user than themselves.",
    )

    # Cursor
    cursor_at = fields.Datetime(
        string="Cursor",
        tracking=True,
        help="Import: the end of the last window that fully succeeded (remote time, UTC). Export: the "
        "time up to which changes were sent. Empty: from Start At.",
    )
    start_at = fields.Datetime(
        help="Where a flow without a cursor starts (import: the oldest change to pull; export: empty "
        "sends every record).",
    )
    overlap_seconds = fields.Integer(
        string="Overlap (s)",
        default=60,
        help="Each window starts this much before the cursor, for clock skew and late indexing; "
        "records seen twice are recognised by their binding and digest.",
    )
    cursor_source = fields.Selection(
        [("own", "Own cursor"), ("remote", "Remote endpoint")],
        default="own",
        required=True,
        help="Remote: the starting point is read from the partner (e.g. get-latest-integration).",
    )
    cursor_remote_path = fields.Char(
        help="Path answering the last successful sync, e.g. /product/get-latest-integration."
    )
    cursor_remote_json_path = fields.Char(default="lastDateTime", string="Cursor JSON Path")
    is_reload_pending = fields.Boolean(
        string="Full Reload Pending", help="The next run reads everything and, for feeds, marks it a base load."
    )

    # Import: windows and pages
    window_minutes = fields.Integer(string="Window (min)", default=30)
    parallel_windows = fields.Integer(
        default=1, help="Windows of a catch-up run at once (each is a job on the sync channel)."
    )
    param_window_start = fields.Char(string="Start Parameter", default="dataInicial")
    param_window_end = fields.Char(string="End Parameter", default="dataFinal")
    extra_params = fields.Char(
        string="Extra Parameters", help="Fixed query parameters, as in a URL: direcaoOrdenacao=ASC&situacao=pago"
    )
    paging_style = fields.Selection(
        [
            ("page", "Page number"),
            ("offset", "Offset and limit"),
            ("cursor", "Next-page token"),
            ("none", "One answer"),
        ],
        default="page",
        required=True,
    )
    param_page = fields.Char(
        string="Page Parameter", default="pagina", help="Page number, offset or token parameter, per the style."
    )
    param_page_size = fields.Char(string="Page Size Parameter", help="Sent only when set (e.g. limit).")
    page_size = fields.Integer(default=50, help="Records per page (the remote's; a shorter page is the last).")
    page_cap = fields.Integer(
        default=200, help="The first page the remote refuses: a window must fit in fewer pages, or it is split."
    )
    total_header = fields.Char(default="x-total-count", help="Response header with the window's total, if any.")
    records_json_path = fields.Char(
        string="Records JSON Path", help="Where the list is in the answer; empty when the answer is the list."
    )
    next_token_json_path = fields.Char(string="Next Token JSON Path", help="Next-page token style: where the token is.")
    id_json_path = fields.Char(
        string="Remote ID JSON Path", default="id", required=True, help="The record's id in a remote document."
    )
    deleted_json_path = fields.Char(
        string="Deleted Flag JSON Path", help="A true value there means the remote record was deleted."
    )
    import_delete_action = fields.Selection(
        [("archive", "Archive the Odoo record"), ("unlink", "Delete the Odoo record"), ("ignore", "Ignore")],
        default="archive",
        required=True,
    )
    record_path = fields.Char(
        string="Single Record Path",
        help="Path of one remote record, '{id}' standing for its id (e.g. /pedidos/{id}): webhooks "
        "import one record through it.",
    )
    match_field_id = fields.Many2one(
        "ir.model.fields",
        string="Adopt By Field",
        ondelete="set null",
        domain="[('model_id', '=', model_id), ('ttype', 'in', ('char', 'integer')), ('store', '=', True)]",
        help="An unbound remote record adopts the Odoo record whose field holds its id (e.g. 'ref'), "
        "instead of creating one.",
    )

    # Export: batches and messages
    export_domain = fields.Char(default="[]", help="Which records of the model are exported.")
    export_protocol = fields.Selection(
        [("batch", "List per request (202 + job to poll)"), ("messages", "Numbered messages + summary")],
        default="batch",
        required=True,
    )
    batch_size = fields.Integer(default=500, help="Records per batch (never above Remote Maximum).")
    remote_max_batch = fields.Integer(string="Remote Maximum", default=DEFAULT_REMOTE_MAX_BATCH)
    max_payload_bytes = fields.Integer(string="Max Bytes", default=5 * 1024 * 1024)
    parallel_batches = fields.Integer(default=3, help="Batches of one flow sent at once.")
    remote_id_json_path = fields.Char(string="Remote ID Key", default="erpId", help="Key of the id in a sent record.")
    remote_id_source = fields.Selection(
        [("odoo_id", "Odoo id (integer)"), ("binding", "Binding's external id, else the Odoo id")],
        default="odoo_id",
        required=True,
    )
    job_id_json_path = fields.Char(string="Job ID JSON Path", default="jobId")
    job_status_path = fields.Char(
        help="Path polled for an accepted batch, '{job_id}' standing for the id, e.g. /product/batch/{job_id}."
    )
    poll_interval = fields.Integer(string="First Poll After (s)", default=10)
    poll_max_minutes = fields.Integer(string="Give Up Polling After (min)", default=60)
    values_as_strings = fields.Boolean(help="Every value is sent as text (feeds whose schema says so).")
    tombstone_json_path = fields.Char(
        string="Tombstone Key", default="DELETED", help="Deleted records are sent with this key set to true."
    )
    send_deletes = fields.Boolean(default=True, help="Send tombstones of deleted records.")
    message_size = fields.Integer(string="Records Per Message", default=200)
    job_state_json_path = fields.Char(string="Job State JSON Path", default="state")
    job_errors_json_path = fields.Char(
        string="Job Errors JSON Path", default="errors", help="Per-item errors of a polled job: [{<id key>, message}]."
    )
    table_name = fields.Char(help="Messages protocol: the table name sent (e.g. TMOV); the code if empty.")
    erp_name = fields.Char(string="ERP Name", help="Messages protocol: the 'erp' of each message and summary.")
    summary_path = fields.Char(default="/tablestream/summary", help="Messages protocol: where the summary goes.")
    primary_key_json_path = fields.Char(
        string="Primary Key Column", help="Messages protocol: the key column (the Remote ID Key if empty)."
    )

    # Mapping
    field_ids = fields.One2many("integration.sync.flow.field", "flow_id", string="Field Map", copy=True)

    # Schedule and retention
    interval_minutes = fields.Integer(string="Every (min)", default=0, help="0: only by Sync Now.")
    next_run_at = fields.Datetime(string="Next Run")
    last_run_at = fields.Datetime(string="Last Run", readonly=True)
    job_time_limit = fields.Integer(
        string="Job Time Limit (s)",
        help="The longest the job of one window or batch may run; cut short, it is retried and "
        "resumes at its next page. 0: ten times the connector's job time limit.",
    )
    keep_days = fields.Integer(string="Keep Runs (days)", default=30)
    cleanup_limit = fields.Integer(
        string="Remove At Most", default=1000, help="Runs removed per cleanup, oldest first."
    )

    # Figures
    run_ids = fields.One2many("integration.sync.run", "flow_id", string="Runs")
    run_count = fields.Integer(compute="_compute_run_figures")
    last_state = fields.Selection(
        [
            ("queued", "Queued"),
            ("running", "Running"),
            ("done", "Done"),
            ("partial", "Partial"),
            ("failed", "Failed"),
        ],
        compute="_compute_run_figures",
        string="Last Run State",
    )
    binding_count = fields.Integer(compute="_compute_binding_count")

    _sql_constraints = [
        ("code_uniq", "unique(connector_id, code)", "A flow code is unique per connector."),
        ("window_positive", "CHECK(window_minutes > 0)", "The window must last at least a minute."),
        ("page_size_positive", "CHECK(page_size > 0)", "The page size must be positive."),
        ("page_cap_positive", "CHECK(page_cap > 1)", "The page cap must be above 1."),
        ("batch_size_positive", "CHECK(batch_size > 0)", "The batch size must be positive."),
        ("parallel_positive", "CHECK(parallel_batches > 0 AND parallel_windows > 0)", "Run at least one at a time."),
        ("message_size_positive", "CHECK(message_size > 0)", "A message holds at least one record."),
        ("overlap_positive", "CHECK(overlap_seconds >= 0)", "The overlap cannot be negative."),
        ("interval_positive", "CHECK(interval_minutes >= 0)", "The interval cannot be negative."),
    ]

    def _compute_run_figures(self):
        # Two queries for the whole list: counts and the newest run of each flow.
        Run = self.env["integration.sync.run"]
        groups = Run._read_group([("flow_id", "in", self.ids)], ["flow_id"], ["__count", "id:max"]) if self.ids else []
        counts = {flow.id: count for flow, count, _last in groups}
        states = {run.flow_id.id: run.state for run in Run.browse([last for _flow, _count, last in groups])}
        for flow in self:
            flow.run_count = counts.get(flow.id, 0)
            flow.last_state = states.get(flow.id, False)

    def _compute_binding_count(self):
        groups = self.env["integration.binding"]._read_group(
            [("connector_id", "in", self.connector_id.ids), ("res_model", "in", list(set(self.mapped("model_name"))))],
            ["connector_id", "res_model"],
            ["__count"],
        )
        counts = {(connector.id, model): count for connector, model, count in groups}
        for flow in self:
            flow.binding_count = counts.get((flow.connector_id.id, flow.model_name), 0)

    @api.constrains("code")
    def _check_code(self):
        for flow in self:
            if not flow.code or not all(c.isascii() and (c.isalnum() or c == "_") for c in flow.code):
                raise ValidationError(
                    self.env._("Flow code %r: use lowercase letters, digits and '_' only.", flow.code or "")
                )
            if flow.code != flow.code.lower():
                raise ValidationError(self.env._("Flow code %r: use lowercase letters.", flow.code))

    @api.constrains("model_id")
    def _check_model(self):
        for flow in self:
            if _is_protected_model(flow.model_id):
                raise ValidationError(
                    self.env._(
                        "Flow %(flow)s: %(model)s cannot be synchronised (system, access and transient models "
                        "hold code, configuration or rights).",
                        flow=flow.name,
                        model=flow.model_id.model,
                    )
                )

    @api.constrains("batch_size", "remote_max_batch")
    def _check_batch_size(self):
        for flow in self:
            if flow.remote_max_batch and flow.batch_size > flow.remote_max_batch:
                raise ValidationError(
                    self.env._(
                        "Flow %(flow)s: Batch Size %(size)s is above the remote's maximum of %(max)s.",
                        flow=flow.name,
                        size=flow.batch_size,
                        max=flow.remote_max_batch,
                    )
                )

    @api.constrains("export_domain")
    def _check_export_domain(self):
        for flow in self:
            try:
                flow._export_domain()
            except (ValueError, SyntaxError) as exc:
                raise ValidationError(
                    self.env._("Flow %(flow)s: the export domain is not valid (%(error)s).", flow=flow.name, error=exc)
                ) from None

    @api.constrains("user_id", "connector_id")
    def _check_user(self):
        for flow in self:
            if flow.user_id.share:
                raise ValidationError(self.env._("Flow %s: only an internal user can run a flow.", flow.name))
            # A flow acts with its user's rights: an integration manager lending it someone
            # else's (an administrator's) would read and write what they cannot themselves.
            if flow.user_id != self.env.user and not self.env.is_system():
                raise ValidationError(
                    self.env._(
                        "Flow %(flow)s: only a Settings administrator may make a flow run as another user "
                        "(%(user)s); run it as yourself.",
                        flow=flow.name,
                        user=flow.user_id.name,
                    )
                )

    # CRUD: the tombstone table of ``base.unlink`` follows the export flows ------------------

    @api.model_create_multi
    def create(self, vals_list):
        flows = super().create(vals_list)
        self.env.registry.clear_cache()
        return flows

    def write(self, vals):
        result = super().write(vals)
        if {"direction", "model_id", "send_deletes", "active", "connector_id"} & set(vals):
            self.env.registry.clear_cache()
        return result

    def unlink(self):
        result = super().unlink()
        self.env.registry.clear_cache()
        return result

    @api.model
    @tools.ormcache()
    def _tombstone_connectors(self):
        """{model: (connector ids)} of the active export flows that send deletions."""
        columns = ("model_name", "connector_id", "direction", "send_deletes", "active")
        self.env.cr.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name IN %s",
            [self._table, columns],
        )
        if self.env.cr.fetchone()[0] != len(columns):
            return {}  # being uninstalled: its columns and table go before the last unlinks
        self.env.cr.execute(
            """SELECT f.model_name, array_agg(DISTINCT f.connector_id)
                 FROM integration_sync_flow f
                WHERE f.direction = 'export' AND f.send_deletes AND f.active AND f.model_name IS NOT NULL
                GROUP BY f.model_name"""
        )
        return {model: tuple(ids) for model, ids in self.env.cr.fetchall()}

    # Hooks and helpers ---------------------------------------------------------------------

    def _hook(self, verb):
        """The connector's code hook ``_sync_<verb>_<kind>_<flow code>``, or None."""
        connector = self.connector_id
        return getattr(connector, f"_sync_{verb}_{connector.kind}_{self.code}", None)

    def _export_domain(self):
        from odoo.tools.safe_eval import safe_eval

        domain = safe_eval(self.export_domain or "[]")
        if not isinstance(domain, list):
            raise ValueError("a domain is a list")
        return domain

    def _model(self):
        """The flow's model as its Run As user, in the connector's company, archived included."""
        return (
            self.env[self.model_name]
            .with_user(self.user_id)
            .with_company(self.company_id)
            .with_context(active_test=False, tracking_disable=True, mail_create_nolog=True, mail_notrack=True)
        )

    def _job_time_limit(self):
        """Seconds the job of one of this flow's windows or batches may run."""
        self.ensure_one()
        return self.job_time_limit or 10 * self.connector_id._job_time_limit()

    def _window_params(self, start, end):
        return {
            self.param_window_start: remote_value(start, "datetime"),
            self.param_window_end: remote_value(end, "datetime"),
        }
