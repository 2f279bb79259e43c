-- Template funnel: receivers per state, per local date, business id and template
-- params: date template receiver
-- One row per (date, business_id, template_id, state); `receivers` counts the
-- receiver rows (one per receiver of a message) that reached the state. The
-- intermediate NIGHT_SHIELD_NEXT_SEND (24) shows up next to the terminal states.
SELECT
    date,
    business_id,
    template_id,
    state,
    state_code,
    count(*) AS receivers
FROM events
WHERE ({{date}} IS NULL OR date = {{date}})
    AND ({{template}} IS NULL OR template_id = {{template}})
    AND ({{receiver}} IS NULL OR receiver = {{receiver}})
GROUP BY date, business_id, template_id, state, state_code
ORDER BY date, business_id, template_id, state_code, state
