-- Recording inbound messages, one call: one round trip and a transaction of
-- its own (the call's), where it was a transaction of four round trips, as
-- a turn's steps are (migration 28). They run as the caller (row-level
-- security applies).

-- The conversations of tenant `p_tenant` with keys (`p_platforms[i]`,
-- `p_chats[i]`, `p_threads[i]`), in their order, each created (id
-- `p_new_ids[i]`, answered by `p_characters[i]`) if it does not exist yet,
-- in the caller's transaction with the tenant set. Existing ones are only
-- read: a plain read does not wait for a turn that holds the row, an insert
-- attempt would. When another transaction inserts the same key at the same
-- moment, the insert waits for it and skips the key, and a second statement
-- reads it. NULL in place of a conversation neither found nor created.
CREATE FUNCTION automate_e_conversations(
    p_tenant uuid, p_new_ids uuid[], p_platforms text[], p_chats text[], p_threads text[],
    p_characters text[])
    RETURNS uuid[] LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    v_ids uuid[];
BEGIN
    -- Each key looked up on its own (LATERAL … LIMIT 1 keeps the planner
    -- from scanning all of the tenant's conversations).
    WITH m AS (
        SELECT * FROM unnest(p_new_ids, p_platforms, p_chats, p_threads, p_characters)
            WITH ORDINALITY AS m (new_id, platform, chat, thread, character, ord)),
    k AS (
        SELECT DISTINCT ON (platform, chat, thread) * FROM m ORDER BY platform, chat, thread, ord),
    found AS (
        SELECT c.id, k.platform, k.chat, k.thread FROM k,
        LATERAL (SELECT c.id FROM conversations c WHERE c.tenant_id = p_tenant
            AND c.platform = k.platform AND c.chat = k.chat AND c.thread = k.thread LIMIT 1) c),
    inserted AS (
        INSERT INTO conversations (id, tenant_id, platform, chat, thread, character)
        SELECT k.new_id, p_tenant, k.platform, k.chat, k.thread, k.character FROM k
        WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.platform = k.platform
            AND f.chat = k.chat AND f.thread = k.thread)
        ON CONFLICT (tenant_id, platform, chat, thread) DO NOTHING
        RETURNING id, platform, chat, thread),
    known AS (SELECT * FROM found UNION ALL SELECT * FROM inserted)
    SELECT array_agg(n.id ORDER BY m.ord) INTO v_ids
        FROM m LEFT JOIN known n
        ON n.platform = m.platform AND n.chat = m.chat AND n.thread = m.thread;
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        SELECT array_agg(coalesce(m.id, (SELECT c.id FROM conversations c
                WHERE c.tenant_id = p_tenant AND c.platform = m.platform AND c.chat = m.chat
                AND c.thread = m.thread)) ORDER BY m.ord) INTO v_ids
            FROM unnest(v_ids, p_platforms, p_chats, p_threads)
                WITH ORDINALITY AS m (id, platform, chat, thread, ord);
    END IF;
    RETURN v_ids;
END
$$;

-- Records inbound messages of tenant `p_tenant` (row `p_ids[i]` for the
-- i-th), each once, with their conversations (`automate_e_conversations`):
-- a redelivery, or the same message twice in one call, gets the existing
-- row. Returns per message, in order: its row, whether this call created
-- it, and whether its turn is done. Nothing is written when a message's
-- existing row is not the tenant's (SQLSTATE AE003) or a conversation was
-- neither found nor created (AE004).
CREATE FUNCTION automate_e_inbox_record(
    p_tenant uuid, p_ids uuid[], p_new_conversations uuid[], p_platforms text[],
    p_chats text[], p_threads text[], p_characters text[], p_message_ids text[],
    p_delivery_ids text[], p_authors text[], p_texts text[], p_attachments jsonb[],
    p_received timestamptz[])
    RETURNS TABLE (inbox_id uuid, created boolean, processed boolean)
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    v_conversations uuid[];
    v_created uuid[];
BEGIN
    PERFORM set_config('automate_e.tenant_id', p_tenant::text, true);
    v_conversations := automate_e_conversations(p_tenant, p_new_conversations, p_platforms,
        p_chats, p_threads, p_characters);
    IF array_position(v_conversations, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a message''s conversation was neither found nor created'
            USING ERRCODE = 'AE004';
    END IF;
    WITH n AS (
        INSERT INTO inbox (id, tenant_id, conversation_id, platform, platform_message_id,
            delivery_id, author_id, text, attachments, received_at)
        SELECT m.id, p_tenant, m.conversation_id, m.platform, m.message_id, m.delivery_id,
            m.author_id, m.text, m.attachments, m.received_at
        FROM unnest(p_ids, v_conversations, p_platforms, p_message_ids, p_delivery_ids,
            p_authors, p_texts, p_attachments, p_received)
            AS m (id, conversation_id, platform, message_id, delivery_id, author_id, text,
            attachments, received_at)
        ON CONFLICT (platform, platform_message_id) DO NOTHING RETURNING id)
    SELECT coalesce(array_agg(n.id), '{}') INTO v_created FROM n;
    -- Later statements: they see what this call and, once they committed,
    -- concurrent ones inserted. Each message is looked up on its own (a
    -- LATERAL … LIMIT 1 or a scalar subquery is not flattened into a join
    -- that could scan the whole inbox).
    IF cardinality(v_created) < cardinality(p_ids) THEN
        PERFORM 1 FROM unnest(p_ids, p_platforms, p_message_ids) AS m (id, platform, message_id)
            WHERE NOT m.id = ANY(v_created) AND (SELECT i.id FROM inbox i
                WHERE i.platform = m.platform AND i.platform_message_id = m.message_id
                LIMIT 1) IS NULL;
        IF FOUND THEN
            RAISE EXCEPTION 'a message was recorded for another tenant' USING ERRCODE = 'AE003';
        END IF;
    END IF;
    RETURN QUERY
        SELECT CASE WHEN m.id = ANY(v_created) THEN m.id ELSE e.id END, m.id = ANY(v_created),
            coalesce(e.done, false)
        FROM unnest(p_ids, p_platforms, p_message_ids) WITH ORDINALITY AS m (id, platform,
            message_id, ord)
        LEFT JOIN LATERAL (SELECT i.id, i.processed_at IS NOT NULL AS done FROM inbox i
            WHERE NOT m.id = ANY(v_created) AND i.platform = m.platform
            AND i.platform_message_id = m.message_id LIMIT 1) e ON true
        ORDER BY m.ord;
END
$$;

REVOKE ALL ON FUNCTION automate_e_conversations(uuid, uuid[], text[], text[], text[], text[]),
    automate_e_inbox_record(uuid, uuid[], uuid[], text[], text[], text[], text[], text[],
    text[], text[], text[], jsonb[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_conversations(uuid, uuid[], text[], text[], text[],
    text[]), automate_e_inbox_record(uuid, uuid[], uuid[], text[], text[], text[], text[],
    text[], text[], text[], text[], jsonb[], timestamptz[]) TO automate_e_service;
