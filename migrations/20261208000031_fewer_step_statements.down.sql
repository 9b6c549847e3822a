-- The functions as migrations 28 and 29 created them.

CREATE OR REPLACE FUNCTION automate_e_turn_end(
    p_tenant uuid, p_conversation uuid, p_fence bigint, p_lead uuid, p_folded uuid[],
    p_outbox uuid, p_dedupe_key text, p_text text, p_stream text, p_expected bigint,
    p_ids uuid[], p_types text[], p_occurred timestamptz[], p_actor_kinds text[],
    p_actor_ids text[], p_payloads jsonb[], p_dedupe_keys text[], p_correlations uuid[],
    p_causations uuid[], p_trace_ids text[], p_sources text[],
    p_hand_back boolean, p_days date[], p_tokens bigint[])
    RETURNS uuid[] LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    v_count bigint;
    v_unreviewed uuid[] := '{}';
BEGIN
    PERFORM set_config('automate_e.tenant_id', p_tenant::text, true);
    IF p_fence IS NOT NULL THEN
        PERFORM 1 FROM conversations WHERE id = p_conversation AND lease_fence = p_fence
            FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the conversation''s lease was taken over' USING ERRCODE = 'AE001';
        END IF;
    END IF;
    IF cardinality(p_folded) > 0 THEN
        UPDATE inbox SET processed_at = now() WHERE id = ANY(p_folded) AND processed_at IS NULL;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        IF v_count <> cardinality(p_folded) THEN
            RAISE EXCEPTION 'a message of the turn was answered already' USING ERRCODE = 'AE002';
        END IF;
    END IF;
    WITH answered AS (UPDATE inbox SET processed_at = now()
            WHERE id = p_lead AND processed_at IS NULL RETURNING tenant_id, conversation_id)
        INSERT INTO outbox (id, tenant_id, conversation_id, dedupe_key, platform, chat, thread, text)
        SELECT p_outbox, a.tenant_id, a.conversation_id, p_dedupe_key, c.platform, c.chat,
            c.thread, p_text
        FROM answered a JOIN conversations c ON c.id = a.conversation_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count <> 1 THEN
        RAISE EXCEPTION 'a message of the turn was answered already' USING ERRCODE = 'AE002';
    END IF;
    IF cardinality(p_ids) > 0 THEN
        INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind,
            actor_id, payload_schema, payload, dedupe_key, correlation_id, causation_id,
            trace_id, source)
        SELECT n.id, p_tenant, p_stream, p_expected + n.ord, n.type, n.occurred_at,
            n.actor_kind, n.actor_id, 'urn:automate-e:schema:' || n.type, n.payload,
            n.dedupe_key, n.correlation_id, n.causation_id, n.trace_id, n.source
        FROM unnest(p_ids, p_types, p_occurred, p_actor_kinds, p_actor_ids, p_payloads,
            p_dedupe_keys, p_correlations, p_causations, p_trace_ids, p_sources)
            WITH ORDINALITY AS n (id, type, occurred_at, actor_kind, actor_id, payload,
            dedupe_key, correlation_id, causation_id, trace_id, source, ord)
        ORDER BY n.ord;
    END IF;
    IF p_hand_back THEN
        UPDATE conversations SET lease_until = NULL, lease_holder = NULL
            WHERE id = p_conversation AND lease_fence = p_fence;
        v_unreviewed := ARRAY(SELECT id FROM proposals
            WHERE conversation_id = p_conversation AND state = 'proposed' ORDER BY created_at);
    END IF;
    -- Last: it locks a usage row until the commit.
    INSERT INTO tenant_llm_usage (tenant_id, day, shard, tokens)
        SELECT p_tenant, d.day, floor(random() * 64)::smallint, d.tokens
        FROM unnest(p_days, p_tokens) AS d (day, tokens)
        ON CONFLICT (tenant_id, day, shard)
        DO UPDATE SET tokens = tenant_llm_usage.tokens + EXCLUDED.tokens;
    RETURN v_unreviewed;
END
$$;

CREATE OR REPLACE FUNCTION automate_e_delivery_done(
    p_tenant uuid, p_outbox uuid, p_chunks integer, p_stream text, p_id uuid, p_type text,
    p_occurred timestamptz, p_actor_kind text, p_actor_id text, p_payload jsonb,
    p_dedupe_key text, p_correlation uuid, p_causation uuid, p_trace_id text, p_source text,
    p_release uuid, p_holder text)
    RETURNS void LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM set_config('automate_e.tenant_id', p_tenant::text, true);
    UPDATE outbox SET delivered_at = now(), chunks_delivered = greatest(chunks_delivered, p_chunks)
        WHERE id = p_outbox AND delivered_at IS NULL;
    IF FOUND THEN
        INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind,
            actor_id, payload_schema, payload, dedupe_key, correlation_id, causation_id,
            trace_id, source)
        VALUES (p_id, p_tenant, p_stream, 1, p_type, p_occurred, p_actor_kind, p_actor_id,
            'urn:automate-e:schema:' || p_type, p_payload, p_dedupe_key, p_correlation,
            p_causation, p_trace_id, p_source);
    END IF;
    IF p_release IS NOT NULL THEN
        UPDATE delivery_holds SET held_until = now()
            WHERE conversation_id = p_release AND holder = p_holder;
    END IF;
END
$$;
