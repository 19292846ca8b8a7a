/** Operator tour: open Integrations > Connectors, create one, test its connection. */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_service/tour_utils";

registry.category("web_tour.tours").add("integration_hub_connector_tour", {
    url: "/odoo",
    steps: () => [
        ...stepUtils.goToAppSteps("integration_hub.integration_hub_menu_root", "Open the Integrations app"),
        {
            content: "The app opens on the Overview; go to Connectors",
            trigger: ".o_menu_sections .o_nav_entry:contains('Connectors')",
            run: "click",
        },
        {
            content: "The Connectors kanban shows the demo connectors",
            trigger: ".o_kanban_view .o_kanban_record:contains('This Odoo (health check)')",
        },
        {
            content: "Create a connector",
            trigger: ".o_control_panel_main_buttons .o-kanban-button-new",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name='name'] input",
            run: "edit Tour Shop",
        },
        {
            trigger: ".o_field_widget[name='code'] input",
            run: "edit tour-shop",
        },
        {
            trigger: ".o_field_widget[name='base_url'] input",
            run: async (helpers) => {
                await helpers.edit(sessionStorage.getItem("integration_hub_tour_base_url"));
            },
        },
        {
            trigger: ".o_field_widget[name='health_path'] input",
            run: "edit /ping",
        },
        {
            content: "The partner server is on this machine, over http",
            trigger: ".o_notebook .nav-link:contains('Reliability')",
            run: "click",
        },
        {
            trigger: ".o_field_widget[name='allow_http'] input",
            run: "check",
        },
        {
            trigger: ".o_field_widget[name='allow_private_network'] input",
            run: "check",
        },
        {
            trigger: ".o_notebook .nav-link:contains('Authentication')",
            run: "click",
        },
        {
            content: "Choose bearer authentication",
            trigger: ".o_field_widget[name='auth_type'] select",
            run: "select \"bearer\"",
        },
        {
            content: "Type the token: it is write-only",
            trigger: ".o_field_widget[name='bearer_token'] input",
            run: "edit tour-token-123",
        },
        {
            content: "Save",
            trigger: ".o_form_button_save",
            run: "click",
        },
        {
            content: "Saved: the token shows as set, never as its value",
            trigger: ".o_form_saved .badge:contains('set'):not(:contains('not'))",
        },
        {
            content: "Test the connection",
            trigger: "button[name='action_test_connection']",
            run: "click",
        },
        {
            content: "The result is reported",
            trigger: ".o_notification:contains('Connection OK')",
        },
        {
            content: "The form shows the status code and health",
            trigger: ".o_field_widget[name='last_test_status_code']:contains('200')",
        },
        {
            content: "The call is counted: the status is OK",
            trigger: ".o_statusbar_status button.o_arrow_button_current:contains('OK')",
        },
    ],
});
