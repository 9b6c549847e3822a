DROP FUNCTION automate_e_inbox_record(uuid, uuid[], uuid[], text[], text[], text[], text[],
    text[], text[], text[], text[], jsonb[], timestamptz[]);
DROP FUNCTION automate_e_conversations(uuid, uuid[], text[], text[], text[], text[]);
