"""Run Odoo's own test machinery and print an honest summary line.

Starts the Odoo server command with the given arguments (module install with
--test-enable --stop-after-init), then reads the registry's test report, the
same object Odoo uses to decide its own exit code, and prints as the last line:

    N passed, M failed

Errors count as failed, and so do skipped tests (a skipped browser tour means
Chromium or websocket-client is missing, which must not pass silently).  A
module that fails to install counts as one failure.
"""

import sys

from odoo.cli.server import main as odoo_main
from odoo.modules.registry import Registry
from odoo.service import server
from odoo.tools import config

# This runner always runs Odoo with --test-enable: say so before importing Odoo's test
# framework, which otherwise logs an error (with a stack) about being imported outside tests.
config["test_enable"] = True
from odoo.tests.result import OdooTestResult  # noqa: E402

_reports = {}
_original_preload = server.preload_registries
# Test ids that failed, errored or were skipped. Odoo's counters count each failing
# subTest (and a failure plus an error of one test twice); a test is counted once here.
_bad_tests = set()
_skipped_tests = set()


def _test_id(test):
    case = getattr(test, "test_case", None)  # a subTest reports under its test
    return (case or test).id()


def _wrap(method_name, bucket):
    original = getattr(OdooTestResult, method_name)

    def wrapper(self, test, *args):
        if method_name != "addSubTest" or args[-1] is not None:
            bucket.add(_test_id(test))
        return original(self, test, *args)

    setattr(OdooTestResult, method_name, wrapper)


for _name in ("addError", "addFailure", "addSubTest"):
    _wrap(_name, _bad_tests)
_wrap("addSkip", _skipped_tests)


def _preload_and_capture(dbnames):
    rc = _original_preload(dbnames)
    for dbname in dbnames or []:
        registry = Registry.registries.get(dbname)
        _reports[dbname] = (rc, registry._assertion_report if registry else None)
    return rc


def main(argv):
    server.preload_registries = _preload_and_capture
    try:
        odoo_main(argv)
    except SystemExit as exc:
        exit_code = exc.code
    else:
        exit_code = 0
    run = 0
    broken = []
    for dbname, (rc, report) in _reports.items():
        if rc < 0 or report is None:
            broken.append(dbname)
            continue
        run += report.testsRun
        if report.failures_count + report.errors_count and not _bad_tests:
            _bad_tests.add("?")  # Odoo counted a failure outside any test we saw
    skipped = len(_skipped_tests - _bad_tests)
    failed = len(_bad_tests) + skipped
    passed = max(run - failed, 0)
    failed += len(broken)
    if broken:
        print(f"Odoo could not load database(s) {', '.join(broken)}: see the log above", file=sys.stderr)
    if skipped:
        print(f"{skipped} test(s) were skipped: counted as failed", file=sys.stderr)
    if not _reports:
        print(f"Odoo exited ({exit_code!r}) before running any test", file=sys.stderr)
        failed += 1
    if run == 0 and not broken and _reports:
        print("Odoo ran no test", file=sys.stderr)
        failed += 1
    sys.stdout.flush()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or exit_code else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
