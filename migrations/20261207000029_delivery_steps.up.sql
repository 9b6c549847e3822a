-- A delivery's steps, each one call (one round trip, the call's own
-- transaction), as a turn's are (migration 28).

-- Holds the deliveries of `p_up_to`'s conversation for `p_holder` during
-- `p_ttl_ms` (taken, or renewed when the holder has them) and finds the
-- reply to post next: its oldest reply not delivered (nor given up) written
-- no later than `p_up_to`. Returns {conversation, next}; {} when another
-- delivery holds them; NULL when there is no such reply.
CREATE FUNCTION automate_e_delivery_next(
    p_tenant uuid, p_up_to uuid, p_holder text, p_ttl_ms bigint)
    RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    v_conversation uuid;
    v_next jsonb;
BEGIN
    PERFORM set_config('automate_e.tenant_id', p_tenant::text, true);
    INSERT INTO delivery_holds (conversation_id, tenant_id, holder, held_until)
        SELECT conversation_id, tenant_id, p_holder, now() + p_ttl_ms * interval '1 millisecond'
        FROM outbox WHERE id = p_up_to
        ON CONFLICT (conversation_id) DO UPDATE
        SET holder = EXCLUDED.holder, held_until = EXCLUDED.held_until
        WHERE delivery_holds.held_until < now() OR delivery_holds.holder = EXCLUDED.holder
        RETURNING conversation_id INTO v_conversation;
    IF v_conversation IS NULL THEN
        PERFORM 1 FROM outbox WHERE id = p_up_to;
        RETURN CASE WHEN FOUND THEN '{}'::jsonb END;
    END IF;
    SELECT to_jsonb(o) INTO v_next FROM (
        SELECT id, tenant_id, conversation_id, platform, chat, thread, text, chunks_delivered,
            delivered_at FROM outbox
        WHERE conversation_id = v_conversation AND id <= p_up_to AND delivered_at IS NULL
            AND given_up_at IS NULL
        ORDER BY id LIMIT 1) o;
    RETURN jsonb_build_object('conversation', v_conversation, 'next', v_next);
END
$$;

-- Marks reply `p_outbox` delivered (all `p_chunks` posted) and appends its
-- delivery event (the only one of stream `p_stream`), only when it was not
-- delivered before; gives `p_holder`'s hold on `p_release`'s deliveries
-- back when that is set.
CREATE FUNCTION automate_e_delivery_done(
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

REVOKE ALL ON FUNCTION automate_e_delivery_next(uuid, uuid, text, bigint),
    automate_e_delivery_done(uuid, uuid, integer, text, uuid, text, timestamptz, text, text,
    jsonb, text, uuid, uuid, text, text, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_delivery_next(uuid, uuid, text, bigint),
    automate_e_delivery_done(uuid, uuid, integer, text, uuid, text, timestamptz, text, text,
    jsonb, text, uuid, uuid, text, text, uuid, text) TO automate_e_service;
