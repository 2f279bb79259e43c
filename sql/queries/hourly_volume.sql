-- Hourly volume: received, sent, failed and dropped receivers per local hour
-- params: date template receiver timezone
-- hour is the local hour of event_time in the job's time zone, 'YYYY-MM-DD HH:00'.
-- dropped counts the other terminal states (15, 20, 22, 30, 40, 50); a night-delayed
-- delivery counts as sent or failed in the hour it was released.
SELECT
    to_char(event_time AT TIME ZONE {{timezone}}, '%Y-%m-%d %H:00') AS hour,
    count(*) FILTER (WHERE state_code = 10) AS received,
    count(*) FILTER (WHERE state_code = 60) AS sent,
    count(*) FILTER (WHERE state_code = 70) AS failed,
    count(*) FILTER (WHERE state_code IN (15, 20, 22, 30, 40, 50)) AS dropped
FROM events
WHERE ({{date}} IS NULL OR date = {{date}})
    AND ({{template}} IS NULL OR template_id = {{template}})
    AND ({{receiver}} IS NULL OR receiver = {{receiver}})
GROUP BY to_char(event_time AT TIME ZONE {{timezone}}, '%Y-%m-%d %H:00')
ORDER BY hour
