DROP FUNCTION automate_e_turn_end(uuid, uuid, bigint, uuid, uuid[], uuid, text, text, text,
    bigint, uuid[], text[], timestamptz[], text[], text[], jsonb[], text[], uuid[], uuid[],
    text[], text[], boolean, date[], bigint[]);
DROP FUNCTION automate_e_turn_start(uuid, uuid, text, bigint, bigint, bigint, date, jsonb,
    text[], text, text);
DROP VIEW automate_e_inbox_messages;
