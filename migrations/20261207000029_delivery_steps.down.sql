DROP FUNCTION automate_e_delivery_done(uuid, uuid, integer, text, uuid, text, timestamptz, text,
    text, jsonb, text, uuid, uuid, text, text, uuid, text);
DROP FUNCTION automate_e_delivery_next(uuid, uuid, text, bigint);
