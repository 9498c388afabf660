-- Which agents an audit entry is about, so that a key limited to some agents reads only the
-- entries about its agents. NULL means the entry is team-wide (or about something that no
-- agent owns, such as a key or a webhook endpoint for every agent). Computed when read, from
-- what every entry already records, so existing entries are covered and writers stay as
-- they are.
CREATE FUNCTION audit_log_agents(p_team uuid, p_target_type text, p_target_id text, p_details jsonb)
RETURNS uuid[]
LANGUAGE sql STABLE AS $$
    SELECT NULLIF(
        CASE
            WHEN p_details->>'agent_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN ARRAY[(p_details->>'agent_id')::uuid]
            WHEN p_target_id IS NULL
                 OR p_target_id !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN NULL
            WHEN p_target_type = 'agent' THEN ARRAY[p_target_id::uuid]
            WHEN p_target_type = 'approval' THEN
                (SELECT ARRAY[agent_id] FROM approvals WHERE id = p_target_id::uuid AND team_id = p_team)
            WHEN p_target_type = 'inbound_webhook' THEN
                (SELECT ARRAY[agent_id] FROM inbound_webhooks WHERE id = p_target_id::uuid AND team_id = p_team)
            WHEN p_target_type = 'api_key' THEN
                (SELECT agent_ids FROM api_keys WHERE id = p_target_id::uuid AND team_id = p_team)
            WHEN p_target_type = 'webhook_endpoint' THEN
                (SELECT agent_ids FROM webhook_endpoints WHERE id = p_target_id::uuid AND team_id = p_team)
        END,
        '{}'::uuid[])
$$;
