-- Dedup and night shield: deduplicated, night-dropped and night-delayed receivers per template
-- params: date template receiver
-- night_shield counts NIGHT_SHIELD (22, dropped), night_delayed NIGHT_SHIELD_NEXT_SEND
-- (24, parked and sent later). Ratios are over received, NULL when nothing was received.
SELECT
    template_id,
    received,
    content_dedup,
    rule_dedup,
    night_shield,
    night_delayed,
    round(CAST(content_dedup AS DOUBLE) / NULLIF(received, 0), 4) AS content_dedup_ratio,
    round(CAST(rule_dedup AS DOUBLE) / NULLIF(received, 0), 4) AS rule_dedup_ratio,
    round(CAST(night_shield + night_delayed AS DOUBLE) / NULLIF(received, 0), 4) AS night_ratio
FROM (
    SELECT
        template_id,
        count(*) FILTER (WHERE state_code = 10) AS received,
        count(*) FILTER (WHERE state_code = 30) AS content_dedup,
        count(*) FILTER (WHERE state_code = 40) AS rule_dedup,
        count(*) FILTER (WHERE state_code = 22) AS night_shield,
        count(*) FILTER (WHERE state_code = 24) AS night_delayed
    FROM events
    WHERE ({{date}} IS NULL OR date = {{date}})
        AND ({{template}} IS NULL OR template_id = {{template}})
        AND ({{receiver}} IS NULL OR receiver = {{receiver}})
    GROUP BY template_id
)
ORDER BY template_id
