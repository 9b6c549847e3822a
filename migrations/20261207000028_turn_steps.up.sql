-- A turn's start and its end, each one call: one round trip and a
-- transaction of its own (the call's), where each was a transaction of six
-- or seven round trips. They run as the caller (row-level security applies)
-- and set the tenant of their transaction first, as `TenantTx` does.

-- A message with its conversation's fields, as the worker reads it.
CREATE VIEW automate_e_inbox_messages WITH (security_invoker = true) AS
    SELECT i.id, i.tenant_id, i.conversation_id, c.character, c.platform, c.chat, c.thread,
        i.author_id, i.text, i.attachments, i.received_at, i.processed_at
    FROM inbox i JOIN conversations c ON c.id = i.conversation_id;

-- Reads message `p_inbox` and, unless it was answered, takes its
-- conversation's lease (or, given the `p_fence` of a held one, checks it is
-- still held: SQLSTATE AE001 otherwise); with the lease, reads what the turn
-- needs: the conversation's pending messages (oldest first, at most
-- `p_limit`), the tenant's settings and its tokens used on `p_day`, the
-- newest facts about the first pending message's author and the end of the
-- conversation's stream (its newest events of `p_types`, the
-- `message_received` of the pending messages and of `p_inbox`, the last
-- version), within the
-- memory of the conversation's character (`p_memory`:
-- {character: {facts, history_days, history_messages}}). Returns
-- {message, fence, pending, tenant, facts, tail}: only `message` when the
-- message was answered or the conversation is busy; NULL when there is no
-- such message.
CREATE FUNCTION automate_e_turn_start(
    p_tenant uuid, p_inbox uuid, p_holder text, p_ttl_ms bigint, p_fence bigint,
    p_limit bigint, p_day date, p_memory jsonb, p_types text[], p_stream_prefix text,
    p_key_prefix text)
    RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    v_msg automate_e_inbox_messages;
    v_fence bigint;
    v_pending jsonb;
    v_lead jsonb;
    v_memory jsonb;
    v_since timestamptz;
    v_stream text;
    v_keys text[];
    v_tenant jsonb;
    v_facts jsonb;
    v_tail jsonb;
BEGIN
    PERFORM set_config('automate_e.tenant_id', p_tenant::text, true);
    SELECT * INTO v_msg FROM automate_e_inbox_messages WHERE id = p_inbox;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_fence IS NULL THEN
        IF v_msg.processed_at IS NOT NULL THEN
            RETURN jsonb_build_object('message', to_jsonb(v_msg));
        END IF;
        UPDATE conversations SET lease_fence = nextval('lease_fences'), lease_holder = p_holder,
            lease_until = now() + p_ttl_ms * interval '1 millisecond'
            WHERE (lease_until IS NULL OR lease_until < now()) AND id = v_msg.conversation_id
            RETURNING lease_fence INTO v_fence;
        IF v_fence IS NULL THEN
            RETURN jsonb_build_object('message', to_jsonb(v_msg));
        END IF;
    ELSE
        PERFORM 1 FROM conversations WHERE id = v_msg.conversation_id AND lease_fence = p_fence
            FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the conversation''s lease was taken over' USING ERRCODE = 'AE001';
        END IF;
        v_fence := p_fence;
        IF v_msg.processed_at IS NOT NULL THEN
            RETURN jsonb_build_object('message', to_jsonb(v_msg), 'fence', v_fence);
        END IF;
    END IF;

    SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.received_at, p.id), '[]') INTO v_pending
        FROM (SELECT * FROM automate_e_inbox_messages
              WHERE conversation_id = v_msg.conversation_id AND processed_at IS NULL
              ORDER BY received_at, id LIMIT p_limit) p;
    v_lead := v_pending -> 0;
    v_memory := coalesce(p_memory -> v_msg.character, '{}');
    v_since := now() - (v_memory ->> 'history_days')::integer * interval '1 day';

    SELECT to_jsonb(s) INTO v_tenant FROM (
        SELECT t.slug, t.name, t.brief, t.accounting_base_url, t.accounting_credential,
            t.accounting_company, t.user_per_minute, t.tenant_per_minute, t.llm_tokens_per_day,
            (SELECT coalesce(sum(u.tokens), 0)::bigint FROM tenant_llm_usage u
             WHERE u.tenant_id = t.id AND u.day = p_day) AS used
        FROM tenants t WHERE t.id = p_tenant) s;

    SELECT coalesce(jsonb_agg(f.fact ORDER BY f.learned_at DESC, f.fact), '[]') INTO v_facts
        FROM (SELECT fact, learned_at FROM user_facts
              WHERE tenant_id = p_tenant AND platform = v_msg.platform
              AND user_id = v_lead ->> 'author_id' AND (v_since IS NULL OR learned_at >= v_since)
              ORDER BY learned_at DESC, fact
              LIMIT coalesce((v_memory ->> 'facts')::bigint, 0)) f;

    -- As `TenantTx::read_stream_tail`: the newest rows read backwards along
    -- (stream, version), the last event whatever its type for the version.
    v_stream := p_stream_prefix || v_msg.conversation_id;
    -- The job's own message too: it may lie beyond the pending read.
    v_keys := ARRAY(SELECT p_key_prefix || (m ->> 'id') FROM jsonb_array_elements(v_pending) m)
        || (p_key_prefix || p_inbox);
    SELECT coalesce(jsonb_agg(to_jsonb(e)), '[]') INTO v_tail FROM (
        (SELECT id, stream, version, global_position, type, actor_kind, actor_id, payload,
             correlation_id, trace_id, occurred_at, false AS keyed FROM events
         WHERE stream = v_stream AND (type = ANY(p_types)
             OR version = (SELECT max(version) FROM events WHERE stream = v_stream))
         ORDER BY version DESC
         LIMIT coalesce((v_memory ->> 'history_messages')::bigint, 0)
             + jsonb_array_length(v_pending) + 1)
        UNION ALL
        SELECT id, stream, version, global_position, type, actor_kind, actor_id, payload,
            correlation_id, trace_id, occurred_at, true FROM events
        WHERE dedupe_key = ANY(v_keys) AND stream = v_stream) e;

    RETURN jsonb_build_object('message', to_jsonb(v_msg), 'fence', v_fence,
        'pending', v_pending, 'tenant', v_tenant, 'facts', v_facts, 'tail', v_tail);
END
$$;

-- Ends a turn: while the lease of fence `p_fence` is held (SQLSTATE AE001
-- otherwise; no check without one), marks the folded messages and the lead
-- answered, writes the reply to the outbox, appends the turn's events known
-- to be new at `p_expected` (the unique keys' errors as a plain append's),
-- gives the lease back when `p_hand_back`, and adds the tokens spent per
-- day. SQLSTATE AE002, with nothing written, when a message was answered
-- already. Returns the conversation's proposals no review picked up yet
-- when it gave the lease back (else none).
CREATE FUNCTION automate_e_turn_end(
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

REVOKE ALL ON FUNCTION automate_e_turn_start(uuid, uuid, text, bigint, bigint, bigint, date,
    jsonb, text[], text, text), automate_e_turn_end(uuid, uuid, bigint, uuid, uuid[], uuid,
    text, text, text, bigint, uuid[], text[], timestamptz[], text[], text[], jsonb[], text[],
    uuid[], uuid[], text[], text[], boolean, date[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_turn_start(uuid, uuid, text, bigint, bigint, bigint, date,
    jsonb, text[], text, text), automate_e_turn_end(uuid, uuid, bigint, uuid, uuid[], uuid,
    text, text, text, bigint, uuid[], text[], timestamptz[], text[], text[], jsonb[], text[],
    uuid[], uuid[], text[], text[], boolean, date[], bigint[]) TO automate_e_service;
GRANT SELECT ON automate_e_inbox_messages TO automate_e_service;
