-- Failure reasons: receivers per channel, rejecting or failing state and reason
-- params: date template receiver
-- Terminal states other than SEND_SUCCESS: RECEIVER_INVALID 15, DISCARD 20,
-- NIGHT_SHIELD 22, CONTENT_DEDUPLICATION 30, RULE_DEDUPLICATION 40, WHITE_LIST 50,
-- SEND_FAIL 70. Most frequent reason first within a state.
SELECT
    channel,
    state,
    state_code,
    reason,
    count(*) AS receivers
FROM events
WHERE state_code IN (15, 20, 22, 30, 40, 50, 70)
    AND ({{date}} IS NULL OR date = {{date}})
    AND ({{template}} IS NULL OR template_id = {{template}})
    AND ({{receiver}} IS NULL OR receiver = {{receiver}})
GROUP BY channel, state, state_code, reason
ORDER BY channel, state_code, receivers DESC, reason
