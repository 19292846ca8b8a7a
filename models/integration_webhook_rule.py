import fnmatch

from odoo import SUPERUSER_ID, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..core.jsonpath import field_value, json_path_get
from .integration_field_map_mixin import MAPPABLE_TYPES

# Models a rule may never write, whoever it runs as: code, configuration or access rights.
PROTECTED_MODELS = frozenset({"res.users", "res.groups", "res.users.apikeys", "res.company"})


def _is_protected_model(model):
    return model.model.startswith("ir.") or model.model in PROTECTED_MODELS or model.transient


class IntegrationWebhookRule(models.Model):
    """The no-code handler: what to do with one event type of a connector.

    Either run a server action (on the event: ``record`` in its code is the event, and
    ``record._payload_json()`` the parsed body), or create/update a record of a model
    matched by the external id found in the payload, with a field mapping.

    Either way it runs as the rule's "Run As" user, with that user's access rights and
    record rules, in the event's company: a rule can do what that user could do by hand.
    """

    _name = "integration.webhook.rule"
    _description = "Webhook Event Rule"
    _order = "connector_id, sequence, id"

    name = fields.Char(compute="_compute_name", store=True, readonly=False)
    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    event_type = fields.Char(
        required=True, help="The event type this rule handles; '*' and '?' match any text, e.g. 'order.*'."
    )
    action_type = fields.Selection(
        [
            ("server_action", "Run a server action"),
            ("upsert", "Create or update a record"),
            ("sync_import", "Import the record through a sync flow"),
        ],
        required=True,
        default="upsert",
    )
    server_action_id = fields.Many2one(
        "ir.actions.server",
        domain="[('model_id.model', '=', 'integration.webhook.event')]",
        help="A server action on Webhook Event: in its code, 'record' is the event and "
        "'record._payload_json()' its parsed body.",
    )
    sync_flow_id = fields.Many2one(
        "integration.sync.flow",
        ondelete="cascade",
        domain="[('connector_id', '=', connector_id), ('direction', '=', 'import')]",
        help="The event announces one remote record (its id at the Record ID JSON Path): the flow "
        "fetches it by id and imports it with its map and bindings. Repeated events are idempotent.",
    )
    model_id = fields.Many2one(
        "ir.model",
        ondelete="cascade",
        domain="[('transient', '=', False), ('model', 'not like', 'ir.%'), "
        "('model', 'not in', ('res.users', 'res.groups', 'res.users.apikeys'))]",
    )
    model_name = fields.Char(related="model_id.model", string="Model Name")
    match_field_id = fields.Many2one(
        "ir.model.fields",
        string="External ID Field",
        ondelete="cascade",
        domain="[('model_id', '=', model_id), ('ttype', 'in', ('char', 'integer')), ('store', '=', True)]",
        help="The field of the model that holds the sender's id, e.g. 'ref' on contacts.",
    )
    match_path = fields.Char(
        string="External ID JSON Path", help="Dotted path to the id in the payload, e.g. 'data.id'."
    )
    field_ids = fields.One2many("integration.webhook.rule.field", "rule_id", string="Field Mapping", copy=True)
    user_id = fields.Many2one(
        "res.users",
        string="Run As",
        required=True,
        ondelete="restrict",
        default=lambda self: self.env.user,
        domain="[('share', '=', False), ('company_ids', 'in', company_id)]",
        help="The rule acts with this user's access rights and record rules, in the event's company. "
        "Choose a user allowed to do exactly what the rule does (e.g. create contacts), no more.",
    )

    @api.depends("event_type", "action_type")
    def _compute_name(self):
        labels = dict(self._fields["action_type"].selection)
        for rule in self:
            rule.name = f"{rule.event_type or '?'}: {labels.get(rule.action_type, '')}"

    @api.constrains("user_id", "connector_id")
    def _check_user(self):
        for rule in self:
            if rule.user_id.share:
                raise ValidationError(
                    self.env._(
                        "Rule %s: only an internal user can run a rule (not a portal or public user).", rule.name
                    )
                )
            if rule.company_id and rule.company_id not in rule.user_id.company_ids:
                raise ValidationError(
                    self.env._(
                        "Rule %(rule)s: %(user)s has no access to %(company)s, the connector's company.",
                        rule=rule.name,
                        user=rule.user_id.name,
                        company=rule.company_id.name,
                    )
                )

    @api.constrains("action_type", "server_action_id", "model_id", "match_field_id", "match_path", "sync_flow_id")
    def _check_action(self):
        for rule in self:
            if rule.action_type == "server_action":
                if not rule.server_action_id:
                    raise ValidationError(self.env._("Rule %s: choose the server action to run.", rule.name))
                if rule.server_action_id.model_id.model != "integration.webhook.event":
                    raise ValidationError(
                        self.env._("Rule %s: the server action must be defined on Webhook Event.", rule.name)
                    )
            elif rule.action_type == "sync_import":
                if not (rule.sync_flow_id and rule.match_path):
                    raise ValidationError(
                        self.env._(
                            "Rule %s: importing through a flow needs the flow and the JSON path of the id.", rule.name
                        )
                    )
                if rule.sync_flow_id.connector_id != rule.connector_id or rule.sync_flow_id.direction != "import":
                    raise ValidationError(
                        self.env._("Rule %s: choose an import flow of the same connector.", rule.name)
                    )
            elif not (rule.model_id and rule.match_field_id and rule.match_path):
                raise ValidationError(
                    self.env._(
                        "Rule %s: creating or updating records needs a model, its external ID field and "
                        "the JSON path of the external ID.",
                        rule.name,
                    )
                )
            elif _is_protected_model(rule.model_id):
                raise ValidationError(
                    self.env._(
                        "Rule %(rule)s: %(model)s cannot be written by a webhook rule (system, access and "
                        "transient models hold code, configuration or rights).",
                        rule=rule.name,
                        model=rule.model_id.model,
                    )
                )
            elif rule.match_field_id.model_id != rule.model_id:
                raise ValidationError(
                    self.env._("Rule %s: the external ID field is not a field of the model.", rule.name)
                )

    @api.model
    def _find(self, connector, event_type):
        """The first active rule of ``connector`` whose pattern matches ``event_type``."""
        for rule in self.sudo().search([("connector_id", "=", connector.id)]):
            if fnmatch.fnmatchcase(event_type or "", rule.event_type):
                return rule
        return self.browse()

    def _apply(self, event):
        """Handle ``event`` as the rule's user; returns the record touched or a note."""
        self.ensure_one()
        user = self.sudo().user_id
        if not user.active and user.id != SUPERUSER_ID:  # OdooBot is archived but set only by code
            raise UserError(
                self.env._("Rule %(rule)s: its Run As user %(user)s is archived.", rule=self.name, user=user.name)
            )
        if self.action_type == "server_action":
            # Odoo's own checks apply: the user is in the action's groups, or (for an
            # action open to all) may write webhook events.
            action = self.sudo().server_action_id.with_user(user).with_company(event.company_id)
            action.with_context(active_model=event._name, active_id=event.id, active_ids=event.ids).run()
            return self.env._("Server action %s ran.", action.name)
        if self.action_type == "sync_import":
            return self.sudo()._sync_import(event)
        return self.sudo()._upsert(event, user)

    def _upsert_many(self, events):
        """Create or update the matched records of many events at once: one search for all
        their external ids, one ``create`` for the new records. The batch processing of
        events offers them here first (``integration.connector._webhook_process_events``).

        Events that cannot go in bulk are left out, for the one-by-one path that gives each
        its own error or order: a payload without a usable id or that does not map, an id
        seen twice in the batch (the later event must see the earlier one's record), an id
        matching several records.

        :return: ``{event id: record}`` for the events done here
        """
        self.ensure_one()
        rule = self.sudo()
        user = rule.user_id
        if not user.active and user.id != SUPERUSER_ID:
            return {}  # the one-by-one path says why
        field_map = rule.field_ids._field_map()
        key = rule.match_field_id.name
        prepared = {}  # external id -> (event, values)
        seen_twice = set()
        for event in events:
            try:
                payload = event._payload_json()
                external_id = rule._external_id(payload)
                values = rule.field_ids._to_odoo(field_map, payload)
            except UserError:
                continue  # the one-by-one path gives the event this error
            if external_id in prepared or external_id in seen_twice:
                seen_twice.add(external_id)
                prepared.pop(external_id, None)
                continue
            values[key] = external_id
            prepared[external_id] = (event, values)
        if not prepared:
            return {}
        company = events[:1].company_id
        Model = self.env[rule.model_id.model].with_user(user).with_company(company).with_context(active_test=False)
        found = {}
        for record in Model.search_fetch([(key, "in", list(prepared))], [key]):
            found[record[key]] = found.get(record[key], Model.browse()) | record
        done = {}
        to_create = []
        for external_id, (event, values) in prepared.items():
            matches = found.get(external_id)
            if matches and len(matches) > 1:
                continue  # the one-by-one path reports the ambiguity
            if matches:
                matches.write(values)
                done[event.id] = matches
            else:
                to_create.append((event, values))
        if to_create:
            created = Model.create([values for _event, values in to_create])
            for (event, _values), record in zip(to_create, created, strict=True):
                done[event.id] = record
        return done

    def _sync_import(self, event):
        """Fetch and import the announced record through the rule's flow (its Run As user)."""
        external_id = json_path_get(event._payload_json(), self.match_path)
        if external_id is None or isinstance(external_id, dict | list) or str(external_id).strip() == "":
            raise UserError(
                self.env._(
                    "Rule %(rule)s: no record id at %(path)r in the payload.", rule=self.name, path=self.match_path
                )
            )
        return self.sync_flow_id._import_one(external_id)

    def _external_id(self, payload):
        """The payload's external id at the rule's path, as the match field's type.

        :raises UserError: none there, or not usable as that type
        """
        external_id = json_path_get(payload, self.match_path)
        if external_id is None or isinstance(external_id, dict | list) or str(external_id).strip() == "":
            raise UserError(
                self.env._(
                    "Rule %(rule)s: no external ID at %(path)r in the payload.", rule=self.name, path=self.match_path
                )
            )
        try:
            return field_value(external_id, "integer" if self.match_field_id.ttype == "integer" else "char")
        except (TypeError, ValueError) as exc:
            raise UserError(
                self.env._(
                    "Rule %(rule)s: the external ID %(value)r at %(path)r is not usable (%(reason)s).",
                    rule=self.name,
                    value=str(external_id)[:100],
                    path=self.match_path,
                    reason=exc,
                )
            ) from None

    def _upsert(self, event, user):
        """Create or update the matched record as ``user`` (the rule is read as superuser)."""
        payload = event._payload_json()
        external_id = self._external_id(payload)
        Model = (
            self.env[self.model_id.model].with_user(user).with_company(event.company_id).with_context(active_test=False)
        )
        key = self.match_field_id.name
        values = self.field_ids._to_odoo(self.field_ids._field_map(), payload)
        values[key] = external_id
        found = Model.search([(key, "=", external_id)], limit=2)
        if len(found) > 1:
            raise UserError(
                self.env._(
                    "Rule %(rule)s: several %(model)s records have %(field)s = %(value)s; cannot tell which to update.",
                    rule=self.name,
                    model=self.model_id.name,
                    field=self.match_field_id.field_description,
                    value=external_id,
                )
            )
        if found:
            found.write(values)
            return found
        return Model.create(values)


class IntegrationWebhookRuleField(models.Model):
    _name = "integration.webhook.rule.field"
    _inherit = ["integration.field.map.mixin"]
    _description = "Webhook Event Rule Field Mapping"

    rule_id = fields.Many2one("integration.webhook.rule", required=True, ondelete="cascade", index=True)
    model_id = fields.Many2one(related="rule_id.model_id")
    field_id = fields.Many2one(
        domain=f"[('model_id', '=', model_id), ('ttype', 'in', {list(MAPPABLE_TYPES)}), ('store', '=', True), "
        "('readonly', '=', False)]",
    )
