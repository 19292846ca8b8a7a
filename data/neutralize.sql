-- integration_hub on a copy of a production database (odoo-bin neutralize): the copy must
-- neither call partners with production credentials nor take their webhooks.

-- forget every encrypted secret (connector credentials, signing secrets, cached OAuth2
-- access and refresh tokens): every column named *_encrypted of the tables named
-- integration_* (this addon's, and those of addons extending it), so a secret added later
-- is cleared too; tables only, not views
DO $$
DECLARE
    secret record;
BEGIN
    FOR secret IN
        SELECT c.table_name, c.column_name
          FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema()
           AND t.table_type = 'BASE TABLE'
           AND c.table_name LIKE 'integration\_%'
           AND c.column_name LIKE '%\_encrypted'
    LOOP
        EXECUTE format('UPDATE %I SET %I = NULL WHERE %I IS NOT NULL',
                       secret.table_name, secret.column_name, secret.column_name);
    END LOOP;
END $$;
UPDATE integration_oauth_token
   SET obtained_at = NULL, expires_at = NULL, refresh_after = NULL,
       -- authorization-code connectors show "Not Connected" (a manager connects the copy on
       -- purpose), and no authorization in progress survives
       connection_state = 'disconnected', connection_message = NULL, connected_at = NULL,
       pending_state_hash = NULL, pending_user_id = NULL, pending_session_hash = NULL,
       pending_expires_at = NULL;

-- pause every connector's webhooks (senders are answered 503 and keep their deliveries)
UPDATE integration_connector
   SET webhook_paused = true;

-- pause every sync flow (Resume on the copy is a decision, taken flow by flow)
UPDATE integration_sync_flow
   SET is_paused = true;

-- stop recording calls
UPDATE integration_connector
   SET debug_until = NULL;

-- nothing queued by the addon runs on the copy: outbound calls, event processing,
-- dispatchers (its crons are deactivated with every other cron by base)
UPDATE queue_job
   SET state = 'cancelled'
 WHERE state IN ('wait_dependencies', 'pending', 'enqueued')
   AND model_name LIKE 'integration.%';
