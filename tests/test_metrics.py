import gc
import hashlib

from prometheus_client.parser import text_string_to_metric_families

from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, tagged
from odoo.tests.common import BaseCase

from ..const import METRICS_ROUTE, METRICS_TOKEN_PARAM
from ..controllers.metrics import _without_cyclic_gc
from ..core.prometheus import Family, render
from ..models.connector.prometheus import LABEL_NAMES, forget_closed_hours
from ..models.integration_connector_metric import LATENCY_BUCKETS_MS, OUTCOMES, flush_counts
from ..models.integration_connector_state import state_cursor
from .common import ADDON_LOGGER, IntegrationHubMixin, Reply, capture_logs

TOKEN = "metrics-test-token-" + "9f8e7d6c5b4a" * 3


def parse(text):
    """{family name: family} as Prometheus's own parser reads the exposition."""
    return {family.name: family for family in text_string_to_metric_families(text)}


class TestPrometheusFormat(BaseCase):
    def test_label_values_are_escaped_and_read_back_unchanged_by_prometheus(self):
        odd = 'back\\slash "quoted"\nsecond line'
        text = render([Family("odd", "Help with a \\ and a\nnewline.", "gauge").add({"connector": odd}, 1.5)])
        self.assertIn('odd{connector="back\\\\slash \\"quoted\\"\\nsecond line"} 1.5', text)
        (sample,) = parse(text)["odd"].samples
        self.assertEqual(sample.labels, {"connector": odd})
        self.assertEqual(sample.value, 1.5)

    def test_a_counter_gets_its_total_suffix_and_a_histogram_its_cumulative_buckets(self):
        text = render(
            [
                Family("calls", "Calls.", "counter").add({"outcome": "ok"}, 7),
                Family("duration_seconds", "Durations.", "histogram", bounds=(0.1, 1.0)).add({}, [2, 3, 4], 12.5),
            ]
        )
        families = parse(text)
        self.assertEqual([(s.name, s.value) for s in families["calls"].samples], [("calls_total", 7.0)])
        samples = {(s.name, s.labels.get("le")): s.value for s in families["duration_seconds"].samples}
        self.assertEqual(
            samples,
            {
                ("duration_seconds_bucket", "0.1"): 2.0,
                ("duration_seconds_bucket", "1.0"): 5.0,
                ("duration_seconds_bucket", "+Inf"): 9.0,
                ("duration_seconds_sum", None): 12.5,
                ("duration_seconds_count", None): 9.0,
            },
        )
        with self.assertRaises(ValueError):
            Family("calls_total", "A counter named with its suffix.", "counter")


class TestScrapeWithoutCyclicGc(BaseCase):
    def test_the_collector_is_paused_during_a_scrape_and_restored_after_it_even_on_error(self):
        self.addCleanup(gc.enable)
        self.assertEqual(_without_cyclic_gc(gc.isenabled), False, "paused while computing")
        self.assertTrue(gc.isenabled(), "resumed after")
        with self.assertRaises(ZeroDivisionError):
            _without_cyclic_gc(lambda: 1 / 0)
        self.assertTrue(gc.isenabled(), "resumed after a failure")
        gc.disable()
        _without_cyclic_gc(lambda: None)
        self.assertFalse(gc.isenabled(), "left off when it was off")


@tagged("post_install", "-at_install")
class TestMetricsRoute(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        cls.company = cls.env.company
        cls.params = cls.env["ir.config_parameter"].sudo()

    def setUp(self):
        super().setUp()
        self.params.set_param(METRICS_TOKEN_PARAM, hashlib.sha256(TOKEN.encode()).hexdigest())

    def _scrape(self, token=TOKEN, **headers):
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.env.flush_all()
        return self.url_open(METRICS_ROUTE, headers=headers, timeout=30)

    def _families(self):
        response = self._scrape()
        self.assertEqual(response.status_code, 200, response.text[:500])
        self.assertEqual(response.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return parse(response.text)

    @staticmethod
    def _values(family, **labels):
        """{sample name or (name, le): value} of the samples matching ``labels``."""
        return {
            (sample.name, sample.labels["le"]) if "le" in sample.labels else sample.name: sample.value
            for sample in family.samples
            if all(sample.labels.get(name) == value for name, value in labels.items())
        }

    def _stored_buckets(self, connector):
        with state_cursor(self.env.cr.dbname) as cr:  # written on the shared-state connection
            cr.execute(
                f"SELECT {', '.join(OUTCOMES)}, latency_sum_ms, histogram FROM integration_connector_metric"
                " WHERE connector_id = %s",
                [connector.id],
            )
            return cr.fetchall()

    # The token ---------------------------------------------------------------------------

    def test_without_a_token_set_the_route_does_not_exist(self):
        self.params.set_param(METRICS_TOKEN_PARAM, False)
        self.assertEqual(self._scrape().status_code, 404)
        self.assertEqual(self._scrape(token=None).status_code, 404)

    def test_a_scrape_without_the_right_bearer_token_is_refused_and_the_token_never_logged(self):
        logs = capture_logs(self, names=(ADDON_LOGGER,))
        for response in (
            self._scrape(token=None),
            self._scrape(token=TOKEN + "x"),
            self._scrape(token=None, Authorization=f"Basic {TOKEN}"),
            self._scrape(token=None, Authorization="Bearer "),
        ):
            self.assertEqual(response.status_code, 401)
            self.assertTrue(response.headers["WWW-Authenticate"].startswith("Bearer"))
            self.assertNotIn("integration_calls", response.text)
        self.assertEqual(self._scrape().status_code, 200)
        self.assertEqual(self._scrape(token=None, Authorization=f"bearer  {TOKEN}").status_code, 200)
        self.assertIn("Metrics scrape refused", logs.text)
        self.assertNotIn(TOKEN[:20], logs.text)

    def test_an_administrator_sets_the_token_in_settings_and_only_its_hash_is_kept(self):
        settings = self.env["res.config.settings"].create({"integration_metrics_token": TOKEN + "-new"})
        settings.execute()
        stored = self.params.get_param(METRICS_TOKEN_PARAM)
        self.assertEqual(stored, hashlib.sha256(f"{TOKEN}-new".encode()).hexdigest())
        self.env.cr.execute("SELECT count(*) FROM ir_config_parameter WHERE value LIKE %s", [f"%{TOKEN}%"])
        self.assertEqual(self.env.cr.fetchone()[0], 0, "the token in clear is stored nowhere")
        self.assertEqual(self._scrape(token=TOKEN).status_code, 401, "the previous token stopped working")
        self.assertEqual(self._scrape(token=f"{TOKEN}-new").status_code, 200)
        self.assertTrue(self.env["res.config.settings"].create({}).integration_metrics_enabled)
        with self.assertRaisesRegex(UserError, "at least 32 characters"):
            self.env["res.config.settings"].create({"integration_metrics_token": "short"})
        manager = self._create_user(
            "ih_metrics_manager", "Metrics Manager", "integration_hub.group_integration_manager"
        )
        with self.assertRaises(AccessError):
            self.env["res.config.settings"].with_user(manager).create({"integration_metrics_token": TOKEN})
        self.env["res.config.settings"].create({}).action_integration_metrics_disable()
        self.assertEqual(self._scrape(token=f"{TOKEN}-new").status_code, 404)

    def test_a_generated_token_is_shown_once_and_works(self):
        action = self.env["res.config.settings"].create({}).action_integration_metrics_generate_token()
        token = action["params"]["message"].rsplit(": ", 1)[1]
        self.assertGreaterEqual(len(token), 32)
        self.assertEqual(self._scrape(token=token).status_code, 200)
        self.assertEqual(self._scrape(token=TOKEN).status_code, 401)

    # The figures ---------------------------------------------------------------------------

    def test_calls_and_latency_histogram_match_the_stored_buckets(self):
        connector = self._create_connector(circuit_threshold=0)
        statuses = iter([200, 200, 200, 200, 404, 503, 503])
        self.server.respond_with(lambda request: Reply(next(statuses), {}))
        for _i in range(7):
            connector._request("GET", "/m", raise_for_status=False)
        flush_counts()  # successes are counted by a background writer
        rows = self._stored_buckets(connector)
        self.assertEqual(len(rows), 1)
        *counts, latency_ms, histogram = rows[0]
        self.assertEqual(dict(zip(OUTCOMES, counts, strict=True))["ok"], 4)

        families = self._families()
        code = connector.code
        calls = [s.value for s in families["integration_calls"].samples if s.labels["connector"] == code]
        self.assertEqual((len(calls), sum(calls)), (len(OUTCOMES), 7.0), "one series per outcome")
        for outcome, count in zip(OUTCOMES, counts, strict=True):
            self.assertEqual(
                self._values(families["integration_calls"], connector=code, outcome=outcome),
                {"integration_calls_total": float(count)},
            )
        duration = self._values(families["integration_call_duration_seconds"], connector=code)
        bounds = [repr(bound / 1000) for bound in LATENCY_BUCKETS_MS] + ["+Inf"]
        cumulative = [float(sum(histogram[: index + 1])) for index in range(len(histogram))]
        self.assertEqual([duration["integration_call_duration_seconds_bucket", le] for le in bounds], cumulative)
        self.assertEqual(duration["integration_call_duration_seconds_count"], 7.0, "+Inf = count = calls")
        self.assertAlmostEqual(duration["integration_call_duration_seconds_sum"], latency_ms / 1000, places=6)
        (age,) = self._values(families["integration_last_success_age_seconds"], connector=code).values()
        self.assertTrue(0.0 <= age < 60.0, f"the last success was a moment ago, not {age} s")

    def test_closed_hours_are_summed_with_the_current_one_and_the_last_success_is_kept(self):
        connector = self._create_connector()
        never = self._create_connector()
        forget_closed_hours()
        self.addCleanup(forget_closed_hours)
        with state_cursor(self.env.cr.dbname) as cr:  # buckets of 5 and 3 hours ago, committed
            cr.execute(
                """INSERT INTO integration_connector_metric (connector_id, hour, calls, ok, refused, latency_sum_ms,
                                                             histogram, last_ok_at)
                   VALUES (%(id)s, date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '5 hours', 3, 3, 0, 30,
                           ARRAY[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                           date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '4 hours 30 minutes'),
                          (%(id)s, date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '3 hours', 2, 0, 2, 40000,
                           ARRAY[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], NULL),
                          (%(never)s, date_trunc('hour', now() AT TIME ZONE 'UTC'), 1, 0, 1, 0,
                           ARRAY[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], NULL)""",
                {"id": connector.id, "never": never.id},
            )
        families = self._families()
        # Scraped again: the closed hours now come from the process's sums, the same figures.
        self.assertEqual(
            self._families()["integration_call_duration_seconds"], families["integration_call_duration_seconds"]
        )
        duration = self._values(families["integration_call_duration_seconds"], connector=connector.code)
        self.assertEqual(duration["integration_call_duration_seconds_bucket", "0.01"], 3.0)
        self.assertEqual(duration["integration_call_duration_seconds_bucket", "10.0"], 3.0)
        self.assertEqual(duration["integration_call_duration_seconds_bucket", "+Inf"], 5.0)
        self.assertAlmostEqual(duration["integration_call_duration_seconds_sum"], 40.03, places=6)
        calls = self._values(families["integration_calls"], connector=connector.code, outcome="refused")
        self.assertEqual(calls, {"integration_calls_total": 2.0})
        (age,) = self._values(families["integration_last_success_age_seconds"], connector=connector.code).values()
        # The success was at half past, 5 hours ago: 4.5 hours plus the minutes of the current hour.
        self.assertTrue(4.5 * 3600 <= age <= 5.5 * 3600, age)
        self.assertEqual(
            self._values(families["integration_last_success_age_seconds"], connector=never.code), {}, "never: absent"
        )
        self.addCleanup(self._delete_buckets, connector | never)

    def _delete_buckets(self, connectors):
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute("DELETE FROM integration_connector_metric WHERE connector_id = ANY(%s)", [connectors.ids])

    def test_backlog_failed_jobs_circuit_health_and_sync_runs_match_the_records(self):
        connector = self._create_connector(health_status="warning")
        quiet = self._create_connector()
        Event = self.env["integration.webhook.event"].sudo()
        for number, state in enumerate(["received", "queued", "processing", "failed", "failed", "done", "ignored"]):
            Event.create({"connector_id": connector.id, "event_id": f"e{number}", "state": state})
        Job = self.env["queue.job"]
        failed_job = Job.search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        failed_job.write({"state": "failed"})
        stuck_job = Job.search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        stuck_job.write({"state": "started", "date_started": "2020-01-01 00:00:00"})
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                "INSERT INTO integration_connector_state (connector_id, circuit_state) VALUES (%s, 'open')",
                [connector.id],
            )
        self.addCleanup(self._delete_state, connector)
        flow = self._flow(connector, "orders")
        self._flow(connector, "archived", active=False)
        Run = self.env["integration.sync.run"]
        for state, created in (("done", 10), ("done", 5), ("failed", 0), ("partial", 3)):
            Run.create({"flow_id": flow.id, "kind": "window", "state": state, "created_count": created})

        families = self._families()
        code = connector.code
        webhooks = families["integration_webhook_events"]
        self.assertEqual(self._values(webhooks, connector=code, state="waiting"), {"integration_webhook_events": 3.0})
        self.assertEqual(self._values(webhooks, connector=code, state="failed"), {"integration_webhook_events": 2.0})
        self.assertEqual(
            self._values(webhooks, connector=quiet.code, state="failed"), {"integration_webhook_events": 0.0}
        )
        self.assertEqual(
            self._values(families["integration_jobs_failed"], connector=code), {"integration_jobs_failed": 1.0}
        )
        self.assertEqual(
            self._values(families["integration_jobs_stuck"], connector=code), {"integration_jobs_stuck": 1.0}
        )
        self.assertEqual(
            self._values(families["integration_circuit_state"], connector=code), {"integration_circuit_state": 2.0}
        )
        self.assertEqual(
            self._values(families["integration_circuit_state"], connector=quiet.code),
            {"integration_circuit_state": 0.0},
        )
        self.assertEqual(
            self._values(families["integration_health_status"], connector=code), {"integration_health_status": 2.0}
        )
        runs = families["integration_sync_runs"]
        self.assertEqual(
            {s.labels["state"]: s.value for s in runs.samples if s.labels["connector"] == code},
            {"queued": 0.0, "running": 0.0, "done": 2.0, "partial": 1.0, "failed": 1.0},
        )
        self.assertEqual({s.labels["flow"] for s in runs.samples if s.labels["connector"] == code}, {"orders"})
        created = self._values(families["integration_sync_records"], connector=code, flow="orders", result="created")
        self.assertEqual(created, {"integration_sync_records": 18.0})
        if "integration.alert" in self.env:
            self.assertIn("integration_alerts_open", families)
        else:
            self.assertNotIn("integration_alerts_open", families)
        (duration,) = families["integration_scrape_duration_seconds"].samples
        self.assertGreater(duration.value, 0)

    def _flow(self, connector, code, **values):
        return self.env["integration.sync.flow"].create(
            {
                "name": code.title(),
                "code": code,
                "connector_id": connector.id,
                "direction": "import",
                "model_id": self.env["ir.model"]._get("res.partner").id,
                "remote_path": "/orders",
                "id_json_path": "id",
                **values,
            }
        )

    def _delete_state(self, connector):
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute("DELETE FROM integration_connector_state WHERE connector_id = %s", [connector.id])

    def test_labels_are_codes_and_fixed_sets_and_series_grow_with_connectors_and_flows_only(self):
        connector = self._create_connector()
        self._flow(connector, "orders")
        self._create_connector(active=False, code="archived-api")
        self.server.respond_with(lambda request: Reply(200, {}))
        connector._request("GET", "/m")
        flush_counts()

        def series():
            families = self._families()
            samples = [sample for family in families.values() for sample in family.samples]
            for sample in samples:
                self.assertLessEqual(set(sample.labels), LABEL_NAMES, sample)
                self.assertNotIn("archived-api", sample.labels.values(), "inactive connectors are left out")
            return {(sample.name, tuple(sorted(sample.labels.items()))) for sample in samples}

        before = series()
        codes = {dict(labels).get("connector") for _name, labels in before} - {None}
        active = self.env["integration.connector"].search([])
        self.assertEqual(codes, set(active.mapped("code")), "connector labels are the active connectors' codes")
        flows = {
            (dict(labels)["connector"], dict(labels)["flow"]) for _name, labels in before if "flow" in dict(labels)
        }
        expected = (
            self.env["integration.sync.flow"]
            .search([("connector_id.active", "=", True)])
            .mapped(lambda f: (f.connector_id.code, f.code))
        )
        self.assertEqual(flows, set(expected))
        outcomes = {dict(labels).get("outcome") for _name, labels in before} - {None}
        self.assertEqual(outcomes, set(OUTCOMES))

        # More calls and events: the same series, other values.
        for _i in range(5):
            connector._request("GET", "/m")
        flush_counts()
        Event = self.env["integration.webhook.event"].sudo()
        Event.create([{"connector_id": connector.id, "event_id": f"x{n}", "state": "failed"} for n in range(20)])
        self.assertEqual(series(), before)

        # One more connector (never called: no last success yet): a fixed number of series more.
        per_connector = {
            (name, labels)
            for name, labels in before
            if dict(labels).get("connector") == connector.code
            and "flow" not in dict(labels)
            and name != "integration_last_success_age_seconds"
        }
        self._create_connector()
        self.assertEqual(len(series()), len(before) + len(per_connector))
