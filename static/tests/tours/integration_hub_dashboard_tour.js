/**
 * Operator tour: the Integrations app opens on the Overview; the failing connector's card is red;
 * its failed events are one click away, and the Retry button is on that list.
 */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

const CARD = ".o_integration_overview .o_kanban_record:contains('Failing Shop')";

registry.category("web_tour.tours").add("integration_hub_dashboard_tour", {
    url: "/odoo",
    steps: () => [
        ...stepUtils.goToAppSteps("integration_hub.integration_hub_menu_root", "Open the Integrations app"),
        {
            content: "The app opens on the Overview, and the failing connector's card is red",
            trigger: `${CARD}.o_kanban_color_1 .o_integration_status:contains('Error')`,
        },
        {
            content: "It says why",
            trigger: `${CARD} .o_integration_reason:contains('0% success over the last hour')`,
        },
        {
            content: "First click: its failed events",
            trigger: `${CARD} a[name='action_open_failed_webhook_events']`,
            run: "click",
        },
        {
            content: "Second screen: the failed event, with its Retry button",
            trigger: ".o_list_view .o_data_row:contains('tour.order.created') button[name='action_retry']",
            run: "click",
        },
        {
            content: "The event is queued again",
            trigger: ".o_notification:contains('queued again')",
        },
    ],
});
