/**
 * Manager tour: on a connector to the order API, create an import flow without code (model,
 * remote path, id path, a field map), press Sync Now, watch its run finish, open a binding and
 * the contact it points at.
 *
 * The Python test (tests/test_tour.py, TestSyncFlowTour) starts the order sandbox and, while the
 * tour runs, plays queue_job's runner in a thread: the run goes Queued -> Running -> Done on
 * the server alone, and the tour reloads the runs as an operator would until it is Done.
 */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

// The tour engine allows a step at most 60 s (trigger and run together): give up a little earlier,
// with the states seen.
const RUN_TIMEOUT_MS = 50000;

function delay(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The states shown in the runs list. */
function runStates() {
    return [...document.querySelectorAll(".o_list_view .o_data_row td[name='state']")].map((cell) =>
        cell.innerText.trim()
    );
}

/** Reload the runs (Enter in an empty search box searches again) until every run is Done. */
async function waitForRunsDone() {
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    const seen = [];
    while (Date.now() < deadline) {
        const states = runStates();
        if (states.join() !== seen.at(-1)) {
            seen.push(states.join());
        }
        if (states.length && states.every((state) => state === "Done")) {
            console.log(`integration_hub sync tour: runs seen ${seen.join(" -> ")}`);
            return;
        }
        const ended = states.filter((state) => state === "Failed" || state === "Partial");
        if (ended.length) {
            throw new Error(`a run ended ${ended.join(", ")} instead of Done`);
        }
        const search = document.querySelector(".o_searchview_input");
        search.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
        await delay(500);
    }
    throw new Error(`the runs are still ${runStates().join(", ") || "absent"} after ${RUN_TIMEOUT_MS / 1000} s`);
}

/** Steps adding one line to the field map: a JSON path and the field it fills. */
function mapLine(jsonPath, fieldSearch, fieldItem) {
    return [
        {
            content: `Map ${jsonPath}: add a line`,
            trigger: ".o_field_widget[name='field_ids'] .o_field_x2many_list_row_add a",
            run: "click",
        },
        {
            trigger: ".o_field_widget[name='field_ids'] .o_selected_row .o_field_widget[name='json_path'] input",
            run: `edit ${jsonPath}`,
        },
        {
            trigger: ".o_field_widget[name='field_ids'] .o_selected_row .o_field_widget[name='field_id'] input",
            run: `edit ${fieldSearch}`,
        },
        {
            content: `Map ${jsonPath}: choose the field`,
            trigger: `.o_field_widget[name='field_ids'] .o-autocomplete--dropdown-item a:contains(${fieldItem})`,
            run: "click",
        },
    ];
}

registry.category("web_tour.tours").add("integration_hub_sync_flow_tour", {
    url: "/odoo",
    steps: () => [
        ...stepUtils.goToAppSteps("integration_hub.integration_hub_menu_root", "Open the Integrations app"),
        {
            content: "Open the connector to the order API",
            trigger: ".o_kanban_view .o_kanban_record:contains('Tour Orders API')",
            run: "click",
        },
        {
            content: "Its Sync Flows",
            trigger: ".o_form_view button[name='action_view_sync_flows']",
            run: "click",
        },
        {
            content: "Create a flow",
            trigger: ".o_control_panel_main_buttons .o_list_button_add",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name='name'] input",
            run: "edit Tour Orders Import",
        },
        {
            trigger: ".o_field_widget[name='code'] input",
            run: "edit tour_orders",
        },
        {
            content: "The flow belongs to the connector it was created from",
            trigger: ".o_field_widget[name='connector_id'] input:value(Tour Orders API)",
        },
        {
            content: "Orders become contacts",
            trigger: ".o_field_widget[name='model_id'] input",
            run: "edit res.partner",
        },
        {
            trigger: ".o_field_widget[name='model_id'] .o-autocomplete--dropdown-item a:contains(/^Contact$/)",
            run: "click",
        },
        {
            trigger: ".o_field_widget[name='remote_path'] input",
            run: "edit /pedidos",
        },
        {
            content: "An order's id is pedidoId",
            trigger: ".o_field_widget[name='id_json_path'] input",
            run: "edit pedidoId",
        },
        ...mapLine("codigo", "Reference", "/^Reference$/"),
        ...mapLine("cliente.nome", "Name", "/^Name$/"),
        {
            content: "The order API's windows and pages are the defaults; ask them in ascending order",
            trigger: ".o_notebook .nav-link:contains('Windows and Pages')",
            run: "click",
        },
        {
            trigger: ".o_field_widget[name='extra_params'] input",
            run: "edit direcaoOrdenacao=ASC",
        },
        {
            trigger: ".o_field_widget[name='param_page'] input:value(pagina)",
        },
        {
            content: "Save",
            trigger: ".o_form_button_save",
            run: "click",
        },
        {
            content: "Saved: Sync Now is offered",
            trigger: ".o_form_saved button[name='action_sync_now']",
        },
        {
            content: "Sync Now",
            trigger: "button[name='action_sync_now']",
            run: "click",
        },
        {
            content: "The sync is queued",
            trigger: ".o_notification:contains('Sync queued')",
        },
        {
            content: "Follow it in the runs",
            trigger: ".o_form_view button[name='action_view_runs']:contains('1')",
            run: "click",
        },
        {
            content: "Watch the run until it is Done (the test's job runner works meanwhile)",
            trigger: ".o_list_view .o_data_row td[name='state']",
            run: waitForRunsDone,
            timeout: 60000,
        },
        {
            content: "Open the finished run",
            trigger: ".o_list_view .o_data_row:contains('Done') td[name='name']",
            run: "click",
        },
        {
            content: "Two pages, 60 orders fetched, 60 contacts created",
            trigger: ".o_form_view .o_field_widget[name='page_count']:contains('2')",
        },
        {
            trigger: ".o_form_view .o_field_widget[name='fetched_count']:contains('60')",
        },
        {
            trigger: ".o_form_view .o_field_widget[name='created_count']:contains('60')",
        },
        {
            content: "Back to the flow",
            trigger: ".o_breadcrumb .breadcrumb-item a:contains('Tour Orders Import')",
            run: "click",
        },
        {
            content: "Its bindings: one per order",
            trigger: ".o_form_view button[name='action_view_bindings']:contains('60')",
            run: "click",
        },
        {
            content: "Open the binding of order 1",
            trigger: ".o_list_view .o_data_row td[name='external_id']:contains(/^1$/)",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name='external_id'] input:value(/^1$/)",
        },
        {
            content: "Open the contact it binds",
            trigger: ".o_form_view button[name='action_open_related']",
            run: "click",
        },
        {
            content: "The contact made from order 1",
            trigger: ".o_breadcrumb .active:contains(/^Cliente 1$/)",
        },
    ],
});
