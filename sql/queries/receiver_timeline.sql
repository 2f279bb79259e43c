-- Receiver timeline: every state a receiver's messages reached, in event time order
-- params: date template receiver
-- Without a receiver, every receiver's timeline, one after the other.
SELECT
    event_time,
    receiver,
    message_id,
    template_id,
    channel,
    state,
    state_code,
    reason
FROM events
WHERE ({{date}} IS NULL OR date = {{date}})
    AND ({{template}} IS NULL OR template_id = {{template}})
    AND ({{receiver}} IS NULL OR receiver = {{receiver}})
ORDER BY receiver, event_time, message_id, state_code
