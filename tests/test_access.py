"""Access rights: operators read and test, managers configure, companies stay apart."""

from odoo.exceptions import AccessError, ValidationError
from odoo.tests import tagged

from .common import IntegrationHubCase


@tagged("post_install", "-at_install")
class TestAccess(IntegrationHubCase):
    def test_operator_reads_but_cannot_configure(self):
        connector = self._create_connector()
        as_operator = connector.with_user(self.operator)
        self.assertEqual(as_operator.name, "Test API")
        with self.assertRaises(AccessError):
            as_operator.write({"base_url": "https://evil.example.com"})
        with self.assertRaises(AccessError):
            self.env["integration.connector"].with_user(self.operator).create(
                {"name": "x", "code": "from-operator", "base_url": "https://a.example.com"}
            )
        with self.assertRaises(AccessError):
            as_operator.unlink()
        self.assertEqual(connector.base_url, self.server.url + "/api")

    def test_operator_triages_errors_but_cannot_repoint_them(self):
        # Retry acts (as superuser) on what an error points at: an operator must not be able
        # to aim it at another failed job or record.
        connector = self._create_connector()
        error_id = self.env["integration.error"]._record(
            connector, {"operation": "Push order", "error_class": "IntegrationHTTPError"}, same_transaction=True
        )
        as_operator = self.env["integration.error"].with_user(self.operator).browse(error_id)
        as_operator.action_ignore()
        self.assertEqual(as_operator.state, "ignored")
        job = self.env["res.partner"].with_delay().read(["name"])
        job_record = self.env["queue.job"].search([("uuid", "=", job.uuid)])
        for values in (
            {"queue_job_id": job_record.id},
            {"res_model": "res.partner", "res_id": self.env.user.partner_id.id},
            {"message": "edited"},
        ):
            with self.subTest(values=values), self.assertRaises(AccessError):
                as_operator.write(values)
        as_manager = as_operator.with_user(self.manager)
        as_manager.write({"message": "annotated by a manager"})
        self.assertEqual(as_manager.message, "annotated by a manager")

    def test_form_hides_secret_inputs_from_operators(self):
        Connector = self.env["integration.connector"]
        operator_arch = Connector.with_user(self.operator).get_views([(False, "form")])["views"]["form"]["arch"]
        manager_arch = Connector.with_user(self.manager).get_views([(False, "form")])["views"]["form"]["arch"]
        secrets = ("api_key", "bearer_token", "basic_password", "oauth2_client_secret")
        secrets += ("api_secret", "jwt_secret", "jwt_private_key")
        for name in secrets:
            self.assertIn(f'name="{name}"', manager_arch)
            self.assertNotIn(f'name="{name}"', operator_arch)
        self.assertIn('name="action_test_connection"', operator_arch)
        # Connect and Disconnect are a manager's; an operator sees the connection state.
        for name in ("action_oauth2_connect", "action_oauth2_disconnect"):
            self.assertIn(f'name="{name}"', manager_arch)
            self.assertNotIn(f'name="{name}"', operator_arch)
        self.assertIn('name="oauth2_connection_state"', operator_arch)

    def test_operator_can_test_connection(self):
        connector = self._create_connector()
        connector.with_user(self.operator).action_test_connection()
        self.assertEqual(connector.health_state, "ok")
        self.assertEqual(len(self.server.received), 1)

    def test_manager_configures(self):
        Connector = self.env["integration.connector"].with_user(self.manager)
        connector = Connector.create(
            {
                "name": "By manager",
                "code": "by-manager",
                "base_url": self.server.url,
                "bearer_token": "bt-mgr",
                "allow_http": True,
                "allow_private_network": True,
            }
        )
        connector.write({"auth_type": "bearer"})
        connector._request("GET", "/ping")
        self.assertEqual(self.server.received[0].headers["Authorization"], "Bearer bt-mgr")

    def test_other_company_invisible(self):
        mine = self._create_connector(code="mine")
        theirs = self._create_connector(code="theirs", company_id=self.other_company.id)
        for user in (self.manager, self.operator):
            Connector = self.env["integration.connector"].with_user(user)
            self.assertEqual(Connector.search([("code", "in", ["mine", "theirs"])]), mine)
            with self.assertRaises(AccessError):
                theirs.with_user(user).read(["name"])

    def test_operator_cannot_see_tokens(self):
        with self.assertRaises(AccessError):
            self.env["integration.oauth.token"].with_user(self.operator).search([])

    def test_public_user_sees_nothing(self):
        self._create_connector()
        public = self.env.ref("base.public_user")
        with self.assertRaises(AccessError):
            self.env["integration.connector"].with_user(public).search([])

    def test_manager_makes_a_flow_that_runs_as_themselves_only(self):
        # The flow form's pickers: a manager who is no Settings administrator finds the model
        # and its fields (Odoo leaves ir.model unreadable to plain internal users).
        model = self.env["ir.model"].with_user(self.manager).name_search("res.partner")
        partner = self.env.ref("base.model_res_partner")
        self.assertIn(partner.id, [model_id for model_id, _name in model])
        Fields = self.env["ir.model.fields"].with_user(self.manager)
        found = Fields.name_search("Reference", [("model", "=", "res.partner")])
        self.assertEqual([name for _id, name in found][:1], ["Reference (Contact)"])
        with self.assertRaises(AccessError):
            self.env["ir.model"].with_user(self.operator).name_search("res.partner")
        connector = self._create_connector()
        Flow = self.env["integration.sync.flow"].with_user(self.manager)
        values = {
            "name": "Orders",
            "code": "orders",
            "connector_id": connector.id,
            "model_id": partner.id,
            "remote_path": "/pedidos",
            "field_ids": [(0, 0, {"json_path": "codigo", "field_id": self.env.ref("base.field_res_partner__ref").id})],
        }
        flow = Flow.create(values)
        self.assertEqual(flow.user_id, self.manager, "it runs as its maker")
        # Lending it an administrator's rights is a Settings administrator's decision.
        admin = self.env.ref("base.user_admin")
        with self.assertRaises(ValidationError):
            flow.write({"user_id": admin.id})
        with self.assertRaises(ValidationError):
            Flow.create(dict(values, code="orders_as_admin", user_id=admin.id))
        flow.with_user(admin).write({"user_id": admin.id})
        self.assertEqual(flow.user_id, admin)
        with self.assertRaises(AccessError):
            self.env["integration.sync.flow"].with_user(self.operator).browse(flow.id).write({"name": "renamed"})
