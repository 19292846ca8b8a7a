/** Operator tour: open Webhook Events, open a failed event, press Retry, see it done. */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

registry.category("web_tour.tours").add("integration_hub_webhook_event_tour", {
    url: "/odoo",
    steps: () => [
        ...stepUtils.goToAppSteps("integration_hub.integration_hub_menu_root", "Open the Integrations app"),
        {
            content: "Open Webhook Events",
            trigger: ".o_menu_sections .o_nav_entry:contains('Webhook Events')",
            run: "click",
        },
        {
            content: "Show the failed events",
            trigger: ".o_searchview_input",
            run: "click",
        },
        {
            trigger: ".o_filter_menu .o-dropdown-item:contains('Failed')",
            run: "click",
        },
        {
            content: "Open the failed order event",
            trigger: ".o_list_view .o_data_row:contains('tour.order.created') td[name='event_type']",
            run: "click",
        },
        {
            content: "The form says why it failed",
            trigger: ".o_form_view .alert-danger:contains('partner API was down')",
        },
        {
            content: "Retry",
            trigger: ".o_form_view button[name='action_retry']",
            run: "click",
        },
        {
            content: "The event was processed",
            trigger: ".o_statusbar_status button.o_arrow_button_current:contains('Done')",
        },
        {
            trigger: ".o_field_widget[name='result_note']:contains('order TOUR-1 imported')",
        },
    ],
});
