-- Channel success: sent, failed and success rate per channel
-- params: date template receiver
-- success_rate = sent / (sent + failed), NULL when nothing was handed to a provider.
-- received counts RECEIVE rows; the rest were dropped before sending.
SELECT
    channel,
    sent,
    failed,
    round(CAST(sent AS DOUBLE) / NULLIF(sent + failed, 0), 4) AS success_rate,
    received
FROM (
    SELECT
        channel,
        count(*) FILTER (WHERE state_code = 60) AS sent,
        count(*) FILTER (WHERE state_code = 70) AS failed,
        count(*) FILTER (WHERE state_code = 10) AS received
    FROM events
    WHERE ({{date}} IS NULL OR date = {{date}})
        AND ({{template}} IS NULL OR template_id = {{template}})
        AND ({{receiver}} IS NULL OR receiver = {{receiver}})
    GROUP BY channel
)
ORDER BY channel
