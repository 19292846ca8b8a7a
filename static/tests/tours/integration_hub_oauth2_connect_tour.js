/** Manager tour: on an authorization-code connector, Connect (through the provider and back),
 * see it connected, then Disconnect. The test opens the connector's form and runs the
 * provider, which approves at once. */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("integration_hub_oauth2_connect_tour", {
    steps: () => [
        {
            content: "The connector is not connected yet",
            trigger: ".o_form_view .o_field_widget[name='oauth2_connection_state']:contains('Not Connected')",
        },
        {
            content: "The redirect URI to register at the provider is shown",
            trigger: ".o_field_widget[name='oauth2_redirect_uri']:contains('/integration/oauth2/callback')",
        },
        {
            content: "Connect: to the provider's consent page and back",
            trigger: ".o_form_view button[name='action_oauth2_connect']:contains('Connect')",
            run: "click",
            expectUnloadPage: true,
        },
        {
            content: "Back on the form, connected",
            trigger: ".o_form_view .o_field_widget[name='oauth2_connection_state']:contains('Connected'):not(:contains('Not'))",
        },
        {
            trigger: ".o_field_widget[name='oauth2_connection_message']:contains('Connected by')",
        },
        {
            content: "Disconnect",
            trigger: ".o_form_view button[name='action_oauth2_disconnect']",
            run: "click",
        },
        {
            content: "Confirm",
            trigger: ".modal-footer .btn-primary",
            run: "click",
        },
        {
            content: "The tokens are forgotten",
            trigger: ".o_form_view .o_field_widget[name='oauth2_connection_state']:contains('Not Connected')",
        },
        {
            trigger: ".o_field_widget[name='oauth2_connection_message']:contains('Disconnected by')",
        },
    ],
});
