{
    "name": "Integration Hub",
    "summary": "Connectors to external APIs with encrypted credentials, signed webhooks, "
    "background syncs, error log and health monitoring",
    "version": "18.0.1.1.0",
    "category": "Integrations",
    "license": "LGPL-3",
    "author": "integration_hub developers",
    "depends": ["base", "mail", "queue_job"],
    "external_dependencies": {"python": ["requests", "cryptography"]},
    "data": [
        "security/integration_hub_security.xml",
        "security/ir.model.access.csv",
        "data/queue_job_data.xml",
        "data/ir_cron_data.xml",
        "views/integration_connector_views.xml",
        "views/integration_oauth_token_views.xml",
        "views/integration_error_views.xml",
        "views/integration_call_log_views.xml",
        "views/integration_connector_metric_views.xml",
        "views/integration_webhook_event_views.xml",
        "views/integration_binding_views.xml",
        "views/integration_oauth2_templates.xml",
        "wizards/integration_webhook_retry_wizard_views.xml",
        "views/menus.xml",
    ],
    "demo": [
        "demo/integration_connector_demo.xml",
    ],
    "assets": {
        "web.assets_tests": [
            "integration_hub/static/tests/tours/*.js",
            "integration_hub/static/tests/integration_hub_every_screen.js",
        ],
    },
    "application": True,
    "installable": True,
}
