"""The partner sandbox behaves as the documents say (it is what syncs are tested against)."""

import time
from datetime import datetime, timedelta

import requests

from odoo.tests.common import BaseCase

from ..sandbox.datasharing import DataSharingSandbox
from ..sandbox.orders import PAGE_CAP, PAGE_SIZE, OrdersSandbox
from ..sandbox.retail import RetailSandbox
from ..sandbox.server import MALFORMED_KINDS, RateLimit


class TestOrdersSandbox(BaseCase):
    def setUp(self):
        super().setUp()
        # 1,000 orders over one day: about 21 every 30 minutes.
        self.sandbox = OrdersSandbox(orders=1000, start=datetime(2026, 1, 1), span=timedelta(days=1)).start()
        self.addCleanup(self.sandbox.stop)
        self.http = requests.Session()
        self.addCleanup(self.http.close)

    def _get(self, path, token="token-a", **params):
        return self.http.get(self.sandbox.url + path, params=params, headers={"Authorization": token}, timeout=10)

    def _page(self, start, end, page, token="token-a"):
        return self._get("/pedidos", token, dataInicial=start, dataFinal=end, direcaoOrdenacao="ASC", pagina=page)

    def _stats(self):
        return self.http.get(self.sandbox.url + "/_sandbox/stats", timeout=10).json()

    def test_a_window_pages_by_50_with_the_total_in_a_header(self):
        first = self._page("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z", 1)
        self.assertEqual(first.status_code, 200)
        self.assertEqual(int(first.headers["x-total-count"]), 250)
        self.assertEqual(len(first.json()), PAGE_SIZE)
        pages = [self._page("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z", n).json() for n in range(1, 7)]
        self.assertEqual([len(rows) for rows in pages], [50, 50, 50, 50, 50, 0], "the sixth page is empty")
        numbers = [order["pedidoId"] for rows in pages for order in rows]
        self.assertEqual(numbers, list(range(1, 251)), "ascending, no gap, no repeat")
        # A 30-minute window: one short page, the last.
        short = self._page("2026-01-01T00:30:00Z", "2026-01-01T01:00:00Z", 1)
        self.assertLess(len(short.json()), PAGE_SIZE)
        self.assertEqual(int(short.headers["x-total-count"]), len(short.json()))
        # The lowercase spelling of the documents' example works too.
        lower = self._get("/pedidos", datainicial="2026-01-01T00:00:00Z", datafinal="2026-01-01T06:00:00Z", pagina=1)
        self.assertEqual(lower.headers["x-total-count"], "250")

    def test_deep_pages_are_refused(self):
        response = self._page("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", PAGE_CAP)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"], "deep_pagination")
        self.assertEqual(self._page("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", PAGE_CAP - 1).status_code, 200)
        self.assertEqual(self._stats()["deep_pages_refused"], 1)

    def test_rate_limit_answers_429_with_retry_after_per_token(self):
        self.sandbox.rate = RateLimit(5, 60.0)  # 5 a minute, for a short test
        statuses = [self._get("/pedidos/1").status_code for _ in range(6)]
        self.assertEqual(statuses, [200] * 5 + [429])
        refused = self._get("/pedidos/1")
        self.assertGreaterEqual(int(refused.headers["retry-after"]), 1)
        self.assertEqual(self._get("/pedidos/1", token="token-b").status_code, 200, "another token has its own budget")
        self.assertEqual(self._stats()["answered_429"], 2)

    def test_a_page_skipped_after_a_429_is_counted(self):
        window = ("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z")
        self._page(*window, 1)
        self._page(*window, 3)  # page 2 was never served: what the documents' example loop does after a 429
        self.assertEqual(self._stats()["pages_skipped"], 1)
        self._page(*window, 2)
        self._page(*window, 4)
        self.assertEqual(self._stats()["pages_skipped"], 1, "asking the same page again is fine")

    def test_single_order_changes_and_faults(self):
        self.assertEqual(self._get("/pedidos/42").json()["codigo"], "P0000042")
        self.assertEqual(self._get("/pedidos/P0000042").json()["pedidoId"], 42)
        self.assertEqual(self._get("/pedidos/999999").status_code, 404)
        self.sandbox.set_order(42, situacao="cancelado")
        self.assertEqual(self._get("/pedidos/42").json()["situacao"], "cancelado")
        self.http.post(self.sandbox.url + "/_sandbox/faults", json={"burst_429": 2}, timeout=10)
        self.assertEqual([self._get("/pedidos/42").status_code for _ in range(3)], [429, 429, 200])
        self.http.post(self.sandbox.url + "/_sandbox/faults", json={"fail_rate": 1.0}, timeout=10)
        self.assertEqual(self._get("/pedidos/42").status_code, 503)
        stats = self._stats()
        self.assertEqual(stats["answered_5xx"], 1)
        self.assertGreaterEqual(stats["busiest_60s"], 7)

    def test_malformed_pages_for_the_next_n_pages_only(self):
        window = ("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z")
        good = self._page(*window, 1)
        faults = self.sandbox.url + "/_sandbox/faults"
        self.assertEqual(self.http.post(faults, json={"malformed": "nonsense"}, timeout=10).status_code, 400)
        seen = {}
        for kind in MALFORMED_KINDS:
            self.http.post(faults, json={"malformed": kind}, timeout=10)
            self.assertEqual(self._get("/pedidos/1").json()["pedidoId"], 1, "a single order is not a page: as is")
            page = self._page(*window, 1)
            self.assertEqual(page.status_code, 200, kind)
            self.assertEqual(page.headers["x-total-count"], "250", "the headers stay those of a good page")
            seen[kind] = page
            self.assertEqual(self._page(*window, 1).content, good.content, f"{kind}: one page only")
        self.assertEqual(seen["not_json"].headers["Content-Type"], "text/plain")
        self.assertEqual(list(seen["object"].json()), ["pedidos"])
        self.assertNotIn("pedidoId", seen["missing_keys"].json()[0])
        self.assertEqual(seen["wrong_types"].json()[0]["pedidoId"], {"value": 1})
        with self.assertRaises(ValueError):
            seen["truncated"].json()
        self.assertTrue(good.content.startswith(seen["truncated"].content))
        self.assertTrue(seen["html"].content.startswith(b"<html>"))
        with self.assertRaises(UnicodeDecodeError):
            seen["invalid_utf8"].content.decode("utf-8")
        self.assertIn("Cliente S\u00e3o", seen["invalid_utf8"].content.decode("latin-1"))
        self.http.post(faults, json={"malformed": "html", "malformed_pages": 2}, timeout=10)
        pages = [self._page(*window, number).content[:6] for number in (1, 2, 3)]
        self.assertEqual(pages[:2], [b"<html>"] * 2)
        self.assertEqual(pages[2][:1], b"[")
        self.assertEqual(self._stats()["pages_malformed"], len(MALFORMED_KINDS) + 2)

    def test_a_token_over_500_requests_a_second_is_blocked_for_an_hour(self):
        self.sandbox.burst = RateLimit(3, 1.0)  # 3 a second, for a short test
        self.sandbox.rate = RateLimit(0)
        statuses = [self._get("/pedidos/1").status_code for _ in range(4)]
        self.assertEqual(statuses, [200, 200, 200, 429])
        blocked = self._get("/pedidos/1")
        self.assertEqual((blocked.status_code, blocked.headers["retry-after"]), (429, "3600"))
        self.assertEqual(self._stats()["tokens_blocked"], 1)

    def test_faults_on_some_paths_only_every_tenth_answered_503(self):
        # The demo's switches: the health path stays up while one order call in ten fails.
        self.http.post(
            self.sandbox.url + "/_sandbox/faults", json={"fail_every": 10, "fail_paths": ["/pedidos"]}, timeout=10
        )
        statuses = [self._get("/pedidos/1").status_code for _i in range(30)]
        self.assertEqual([i for i, status in enumerate(statuses) if status == 503], [9, 19, 29])
        self.assertEqual({self._get("/health").status_code for _i in range(20)}, {200})

    def test_new_orders_appear_over_time(self):
        growing = OrdersSandbox(orders=10, new_every=0.2).start()
        self.addCleanup(growing.stop)
        self.assertEqual(self.http.get(growing.url + "/pedidos/11", timeout=10).status_code, 404)
        time.sleep(0.5)
        order = self.http.get(growing.url + "/pedidos/11", timeout=10)
        self.assertEqual((order.status_code, order.json()["codigo"]), (200, "P0000011"))
        changed = datetime.fromisoformat(order.json()["dataAtualizacao"].replace("Z", ""))
        self.assertLess(abs(datetime.utcnow() - changed), timedelta(seconds=5), "changed now")
        self.assertGreaterEqual(self.http.get(growing.url + "/_sandbox/stats", timeout=10).json()["orders"], 12)


class TestRetailSandbox(BaseCase):
    def setUp(self):
        super().setUp()
        # Fast jobs for tests (the documents say 3 to 5 items a second).
        self.sandbox = RetailSandbox(api_key="key-1", items_per_second=10000).start()
        self.addCleanup(self.sandbox.stop)
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = "key-1"
        self.addCleanup(self.http.close)

    def _post(self, items):
        return self.http.post(self.sandbox.url + "/erp-data/product/batch", json=items, timeout=10)

    def _job(self, job_id):
        for _attempt in range(50):
            report = self.http.get(f"{self.sandbox.url}/erp-data/product/batch/{job_id}", timeout=10).json()
            if report["state"] != "Processing":
                return report
            time.sleep(0.02)
        self.fail(f"job {job_id} still processing")

    def test_a_portal_fed_before_has_a_latest_integration(self):
        latest = "/erp-data/product/get-latest-integration"
        self.assertEqual(self.http.get(self.sandbox.url + latest, timeout=10).status_code, 404)
        fed = RetailSandbox(api_key="key-1", last_integration=datetime(2026, 1, 1).timestamp()).start()
        self.addCleanup(fed.stop)
        answer = self.http.get(fed.url + latest, timeout=10)
        self.assertEqual(answer.status_code, 200)
        self.assertTrue(answer.json()["lastDateTime"].startswith("2026-01-01T"))

    def test_a_batch_is_accepted_then_polled_to_its_result(self):
        response = self._post([{"erpId": n, "description": f"Product {n}"} for n in range(1, 301)])
        self.assertEqual(response.status_code, 202)
        report = self._job(response.json()["jobId"])
        self.assertEqual(
            {k: report[k] for k in ("state", "totalItems", "successCount", "failureCount")},
            {"state": "Succeeded", "totalItems": 300, "successCount": 300, "failureCount": 0},
        )
        latest = self.http.get(self.sandbox.url + "/erp-data/product/get-latest-integration", timeout=10)
        self.assertEqual(latest.status_code, 200)
        self.assertTrue(latest.json()["lastDateTime"].endswith("Z"))

    def test_resending_upserts_by_erp_id(self):
        for description in ("first", "second"):
            job_id = self._post([{"erpId": 7, "description": description}, {"erpId": 8, "description": "x"}]).json()
            self._job(job_id["jobId"])
        self.assertEqual(len(self.sandbox.products), 2, "no duplicate")
        self.assertEqual(self.sandbox.products[7]["description"], "second")

    def test_item_failures_make_a_partial_job_with_errors_and_one_history_line(self):
        self.sandbox.reject_erp_ids = {3}
        job_id = self._post([{"erpId": 1, "description": "ok"}, {"erpId": 2}, {"erpId": 3, "description": "no"}]).json()
        report = self._job(job_id["jobId"])
        self.assertEqual(
            (report["state"], report["successCount"], report["failureCount"]), ("PartiallySucceeded", 1, 2)
        )
        self.assertEqual({error["erpId"] for error in report["errors"]}, {2, 3})
        history = self.http.get(self.sandbox.url + "/erp-data/integration-history/ErpProduct?horas=24", timeout=10)
        self.assertEqual(len(history.json()), 1, "one summary per batch, never a line per item")

    def test_invalid_batches_are_refused_whole(self):
        cases = {
            "over 1,000 items": [{"erpId": n, "description": "x"} for n in range(1001)],
            "a text erpId": [{"erpId": "12", "description": "x"}],
            "a repeated erpId": [{"erpId": 5, "description": "x"}, {"erpId": 5, "description": "y"}],
            "not a list": {"erpId": 1},
        }
        for why, items in cases.items():
            with self.subTest(why):
                response = self._post(items)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.json()["error"], "invalid_batch")
        self.assertEqual(self.sandbox.jobs, {})
        self.assertEqual(
            self.http.get(self.sandbox.url + "/erp-data/product/get-latest-integration", timeout=10).status_code, 404
        )

    def test_key_required_and_100_a_minute(self):
        anonymous = requests.post(self.sandbox.url + "/erp-data/product/batch", json=[], timeout=10)
        self.assertEqual(anonymous.status_code, 401)
        self.sandbox.rate = RateLimit(3, 60.0)
        statuses = [
            self.http.get(self.sandbox.url + "/erp-data/product/batch/none", timeout=10).status_code for _ in range(4)
        ]
        self.assertEqual(statuses, [404, 404, 404, 429])


def _table(batch_id, number, rows, table="TMOV", base=False):
    return {
        "tableName": table,
        "erp": "RM",
        "batchId": batch_id,
        "messageNumber": number,
        "recordCount": len(rows),
        "isBaseLoad": base,
        "rows": [{"columns": [{"name": k, "value": v} for k, v in row.items()]} for row in rows],
    }


class TestDataSharingSandbox(BaseCase):
    def setUp(self):
        super().setUp()
        self.sandbox = DataSharingSandbox(client_id="c1", client_secret="s1").start()
        self.addCleanup(self.sandbox.stop)
        self.http = requests.Session()
        self.addCleanup(self.http.close)
        registry = self.http.get(self.sandbox.url + "/registry", timeout=10).json()
        addresses = {entry["service"]: entry["endpoints"][0]["address"] for entry in registry}
        token = self.http.post(
            addresses["rac-token"],
            data={
                "grant_type": "client_credentials",
                "scope": "authorization_api",
                "client_id": "c1",
                "client_secret": "s1",
            },
            timeout=10,
        ).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.entities_url = addresses["provisioning-carol-definitions-entities"]

    def _write(self, message):
        return self.http.post(self.sandbox.url + "/tablestream/write", json=message, timeout=10).json()

    def _summary(self, batch_id, messages, records):
        body = {
            "erp": "RM",
            "batchId": batch_id,
            "messageCount": messages,
            "recordCount": records,
            "timestampStart": "2026-01-01T00:00:00Z",
            "timestampEnd": "2026-01-01T00:00:05Z",
        }
        return self.http.post(self.sandbox.url + "/tablestream/summary", json=body, timeout=10).json()

    def test_token_and_entities(self):
        self.assertEqual(requests.get(self.entities_url, timeout=10).status_code, 401, "a token is required")
        self.assertEqual(self.http.get(self.entities_url, timeout=10).status_code, 400, "x-upload-version required")
        entities = self.http.get(self.entities_url, headers={"x-upload-version": "2"}, timeout=10).json()
        self.assertEqual(entities["uploadVersion"], 2)
        self.assertEqual(
            [(q["table"], q["forceReload"]) for q in entities["queries"]], [("TMOV", True), ("FLAN", False)]
        )
        wrong = requests.post(
            self.sandbox.url + "/connect/token",
            data={"grant_type": "client_credentials", "client_id": "c1", "client_secret": "nope"},
            timeout=10,
        )
        self.assertEqual(wrong.status_code, 401)

    def test_numbered_messages_and_a_matching_summary(self):
        batch = 1767225600
        rows = [{"ID": str(n), "VALOR": "1.50"} for n in range(200)]
        self.assertTrue(self._write(_table(batch, 1, rows, base=True))["success"])
        self.assertTrue(self._write(_table(batch, 2, [{"ID": "9", "DELETED": "true"}]))["success"])
        # A retried message (same number, same content) is accepted once.
        self.assertTrue(self._write(_table(batch, 2, [{"ID": "9", "DELETED": "true"}]))["success"])
        self.assertTrue(self._summary(batch, 2, 201)["success"])
        stats = self.http.get(self.sandbox.url + "/_sandbox/stats", timeout=10).json()
        self.assertEqual((stats["messages"], stats["records"], stats["deleted_rows"], stats["retries"]), (2, 201, 1, 1))
        # The base load of TMOV acknowledged its forceReload.
        entities = self.http.get(self.entities_url, headers={"x-upload-version": "1"}, timeout=10).json()
        self.assertFalse(entities["queries"][0]["forceReload"])
        self.assertFalse(self._summary(batch, 2, 201)["success"], "a batch is summarised once")

    def test_gaps_repeats_and_bad_messages_are_refused(self):
        batch = 1767225605
        self.assertTrue(self._write(_table(batch, 1, [{"ID": "1"}]))["success"])
        gap = self._write(_table(batch, 3, [{"ID": "3"}]))
        self.assertEqual(gap, {"success": False, "errors": ["message 3 out of order: expected 2"]})
        repeat = self._write(_table(batch, 1, [{"ID": "other"}]))
        self.assertIn("repeated with other content", repeat["errors"][0])
        too_many = self._write(_table(batch, 2, [{"ID": str(n)} for n in range(201)]))
        self.assertIn("at most 200 records", too_many["errors"][0])
        not_text = _table(batch, 2, [{"ID": "2"}])
        not_text["rows"][0]["columns"][0]["value"] = 2
        self.assertIn("every value travels as a string", self._write(not_text)["errors"])
        lost = self._summary(batch, 2, 2)
        self.assertFalse(lost["success"])
        self.assertIn("messageCount 2 but 1 messages received", lost["errors"])
        stats = self.http.get(self.sandbox.url + "/_sandbox/stats", timeout=10).json()
        self.assertEqual((stats["gaps"], stats["repeats"], stats["summaries_refused"]), (1, 1, 1))
