-- Reference scoring: the auto-session-revocation query of the AWS solution "Secure Media
-- Delivery at the Edge on AWS" (lambda/prepare_query), with its defects fixed:
--   * the median rate is taken over sessions that can have a rate (duration >= min
--     duration), so a one-request session (duration 0) neither divides by zero nor skews it;
--   * the window has an end as well as a start, so a replay (`--now`) sees only its window;
--   * parameters are bound, never pasted into the SQL text.
-- Everything else is as the solution scores: only 200/206 responses over 1024 bytes count;
-- rate = distinct (viewer IP, URI) pairs / session duration;
-- score = w_rate * rate / median(rate) + w_ip * [ips > 1] + w_referer * [referers > 1]
--         + w_ua * [user agents > 1], where `-` (none) counts as a referer / user agent;
-- nothing is scored unless the window holds at least min_sessions sessions.
-- Each penalty signal `x` comes with `x_threshold` (it counts above it) and `x_score`.
--
-- @param threshold      float   2.2  Flag a session when its score exceeds this.
-- @param min_sessions   int     3    Score nothing unless the window holds at least this many sessions.
-- @param min_duration_s seconds 30   Score only sessions that lasted at least this long.
-- @param weight_rate    float   1    Weight of the session's request rate relative to the median.
-- @param weight_ip      float   1    Penalty for more than one viewer IP.
-- @param weight_referer float   1    Penalty for more than one referer.
-- @param weight_ua      float   1    Penalty for more than one user agent.

-- Session ids as text, once per session: the statement below groups and counts on 64-bit
-- keys (key64), which DataFusion hashes and compares several times faster than text and holds
-- in a fraction of the memory (grouped on text, a cold hour of 2 M lines peaked at ~860 MiB).
-- A key stands for its value: two different values share one with probability about
-- n^2 / 2^65 for n distinct values.
CREATE TABLE session_ids AS
SELECT key64(session_id) AS session, session_id
FROM (
    SELECT unnest(ids) AS session_id
    FROM (SELECT distinct_values(session_id) AS ids FROM requests WHERE epoch_s >= $window_start AND epoch_s < $window_end)
);

WITH delivered AS (
    -- An absent referer or agent (`-` in the log, NULL here) is a value of its own, as the
    -- solution's '-' is: key64 keys NULL like any other value.
    SELECT key64(session_id) AS session, epoch_s, key64(c_ip) AS ip, key64(object_path) AS path,
           key64(referer) AS referer, key64(user_agent) AS user_agent
    FROM requests
    WHERE epoch_s >= $window_start AND epoch_s < $window_end
      AND status IN (200, 206)
      AND sc_bytes > 1024
),
ip_uri_pairs AS (
    SELECT session, count(*) AS pairs
    FROM (SELECT DISTINCT session, ip, path FROM delivered)
    GROUP BY session
),
per_session AS (
    SELECT session,
           max(epoch_s) - min(epoch_s) AS duration_s,
           count(DISTINCT ip)          AS ips,
           count(DISTINCT referer)     AS referers,
           count(DISTINCT user_agent)  AS user_agents
    FROM delivered
    GROUP BY session
),
sessions AS (
    SELECT i.session_id, s.duration_s, s.ips, s.referers, s.user_agents, p.pairs AS ip_uri_pairs,
           CASE WHEN s.duration_s >= $min_duration_s AND s.duration_s > 0
                THEN CAST(p.pairs AS DOUBLE) / s.duration_s END AS rate
    FROM per_session s
    JOIN ip_uri_pairs p ON p.session = s.session
    JOIN session_ids i ON i.session = s.session
),
population AS (
    SELECT count(*) AS sessions_in_window, median(rate) AS median_rate
    FROM sessions
),
scored AS (
    SELECT s.*, pop.sessions_in_window, pop.median_rate,
           s.rate IS NOT NULL AND pop.sessions_in_window >= $min_sessions AND pop.median_rate > 0 AS eligible,
           s.rate / pop.median_rate                                                     AS rate_ratio,
           CAST($weight_rate AS DOUBLE) * s.rate / pop.median_rate                      AS rate_ratio_score,
           CASE WHEN s.ips > 1         THEN CAST($weight_ip AS DOUBLE)      ELSE 0.0 END AS ips_score,
           CASE WHEN s.referers > 1    THEN CAST($weight_referer AS DOUBLE) ELSE 0.0 END AS referers_score,
           CASE WHEN s.user_agents > 1 THEN CAST($weight_ua AS DOUBLE)      ELSE 0.0 END AS user_agents_score
    FROM sessions s CROSS JOIN population pop
),
decided AS (
    SELECT *,
           CASE WHEN eligible THEN rate_ratio_score + ips_score + referers_score + user_agents_score END AS score
    FROM scored
)
SELECT
    session_id,
    score,
    coalesce(score > $threshold, false) AS flagged,
    CASE
        WHEN NOT eligible AND sessions_in_window < $min_sessions THEN
            concat('not scored: ', sessions_in_window, ' sessions in window < min_sessions ', $min_sessions)
        WHEN NOT eligible THEN
            concat('not scored: lasted ', duration_s, 's < min_duration ', $min_duration_s, 's')
        ELSE concat_ws('; ',
            concat('score ', round(score, 2), CASE WHEN score > $threshold THEN ' > ' ELSE ' <= ' END,
                   'threshold ', $threshold),
            concat('rate ', round(rate, 3), '/s is ', round(rate_ratio, 2), 'x the median ',
                   round(median_rate, 3), '/s (+', round(rate_ratio_score, 2), ')'),
            CASE WHEN ips > 1 THEN concat(ips, ' viewer IPs > 1 (+', ips_score, ')') END,
            CASE WHEN referers > 1 THEN concat(referers, ' referers > 1 (+', referers_score, ')') END,
            CASE WHEN user_agents > 1 THEN concat(user_agents, ' user agents > 1 (+', user_agents_score, ')') END)
    END AS reasons,
    CAST($threshold AS DOUBLE) AS threshold,
    rate_ratio, rate_ratio_score,
    ips, 1 AS ips_threshold, ips_score,
    referers, 1 AS referers_threshold, referers_score,
    user_agents, 1 AS user_agents_threshold, user_agents_score,
    rate, median_rate, duration_s, ip_uri_pairs, sessions_in_window
FROM decided
