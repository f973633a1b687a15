-- The reference scoring (queries/reference.sql) for DuckDB over raw CloudFront gz logs: the
-- peer that `revokd-bench speed` measures revokd against. Same rules: 200/206 over 1024
-- bytes in [window_start, window_end), session = text before the first `.` of a 4-part first
-- path segment, rate = distinct (IP, URI) / duration, median over sessions lasting at least
-- 30 s, at least 3 sessions, flagged when score > 2.2. `-` counts as a referer / agent.
-- {file}, {window_start} and {window_end} are filled in by the benchmark (its own inputs).
-- The `raw` CTE's SELECT is repeated once per file and joined with UNION ALL: DuckDB 1.x/2.0
-- given a list of gzip CSV files grows to >10 GB and minutes for two of these files, while one
-- read_csv per file reads each in ~1 s and 300 MB (measured here; the union is the fair form).
WITH raw AS (
    SELECT * FROM read_csv({file}, delim = '\t', header = false, skip = 2, compression = 'gzip',
        quote = '', escape = '', null_padding = true, all_varchar = true,
        names = ['date', 'time', 'x_edge_location', 'sc_bytes', 'c_ip', 'cs_method', 'cs_host',
                 'cs_uri_stem', 'sc_status', 'cs_referer', 'cs_user_agent', 'cs_uri_query',
                 'cs_cookie', 'x_edge_result_type', 'x_edge_request_id', 'x_host_header',
                 'cs_protocol', 'cs_bytes', 'time_taken', 'x_forwarded_for', 'ssl_protocol',
                 'ssl_cipher', 'x_edge_response_result_type', 'cs_protocol_version', 'fle_status',
                 'fle_encrypted_fields', 'c_port', 'time_to_first_byte',
                 'x_edge_detailed_result_type', 'sc_content_type', 'sc_content_len',
                 'sc_range_start', 'sc_range_end'])
),
delivered AS (
    SELECT split_part(cs_uri_stem, '/', 2) AS first_segment, cs_uri_stem AS uri, c_ip,
           cs_referer AS referer,
           -- Decoded as revokd decodes it: CloudFront encodes some agents twice (%2520).
           CASE WHEN contains(cs_user_agent, '%25') THEN url_decode(url_decode(cs_user_agent))
                ELSE url_decode(cs_user_agent) END AS user_agent,
           epoch(CAST(date || ' ' || time AS TIMESTAMP)) AS epoch_s
    FROM raw
    WHERE sc_status IN ('200', '206') AND TRY_CAST(sc_bytes AS BIGINT) > 1024
),
in_window AS (
    SELECT split_part(first_segment, '.', 1) AS session_id, uri, c_ip, referer, user_agent, epoch_s
    FROM delivered
    WHERE length(first_segment) - length(replace(first_segment, '.', '')) = 3
      AND split_part(first_segment, '.', 1) <> ''
      AND epoch_s >= {window_start} AND epoch_s < {window_end}
),
pairs AS (
    SELECT session_id, count(*) AS pairs
    FROM (SELECT DISTINCT session_id, c_ip, uri FROM in_window)
    GROUP BY session_id
),
per_session AS (
    SELECT w.session_id, p.pairs,
           max(epoch_s) - min(epoch_s) AS duration_s,
           count(DISTINCT c_ip) AS ips,
           count(DISTINCT referer) AS referers,
           count(DISTINCT user_agent) AS user_agents
    FROM in_window w JOIN pairs p ON p.session_id = w.session_id
    GROUP BY w.session_id, p.pairs
),
rated AS (
    SELECT *, CASE WHEN duration_s >= 30 THEN pairs / duration_s END AS rate FROM per_session
),
population AS (SELECT count(*) AS sessions, median(rate) AS median_rate FROM rated)
SELECT session_id,
       rate / median_rate + (ips > 1)::INT + (referers > 1)::INT + (user_agents > 1)::INT AS score
FROM rated, population
WHERE sessions >= 3 AND rate IS NOT NULL AND median_rate > 0
  AND rate / median_rate + (ips > 1)::INT + (referers > 1)::INT + (user_agents > 1)::INT > 2.2
ORDER BY score DESC
