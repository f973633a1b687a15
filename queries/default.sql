-- Default detection: tells a shared token from honest playback that merely looks "multiple".
--
-- Honest noise is one playback timeline spread over several addresses or agents over time
-- (Wi-Fi/cellular handover, DHCP, VPN, IPv4/IPv6, proxy pools, iOS page + AppleCoreMedia,
-- casting). A leaked token is several timelines at once; a restreamer pulls several
-- renditions of every segment. Every signal asks "how many playbacks at the same time", in
-- units of time (buckets of bucket_s seconds) or shares, never relative to the window's median
-- (which moves with whatever else is in the window). In a bucket, two playbacks show as
--   * a segment fetched from a second address (co-viewers of a live channel, or of the same
--     part of a title), counted in the bucket of that second fetch; or
--   * two addresses playing positions of one title far apart (viewers of a VOD token at
--     different points).
-- and in both cases the addresses' requests interleave (A B A B), where a hand-off from one
-- network to the next changes address once (A A B B). Honest patterns still produce such a
-- bucket once in a while (a seek as a proxy pool changes address); sharing produces them one
-- after another. So:
--
--   concurrent_run   longest run of consecutive buckets with two playbacks;
--   peak_playbacks   most playbacks within one bucket: the places a title is played in
--                    (positions far apart) plus the addresses repeating a part another
--                    address played; and
--   crowded_segments segments fetched from three or more addresses: three playbacks are
--                    something no single viewer's network changes produce, so they need no
--                    waiting for a sustained run;
--   rendition_share  share of the segments one address fetched in two or more renditions,
--                    over at least restream_min_segments (a restreamer's ladder);
--   far_buckets      buckets served by edges more than far_km apart.
--
-- score = the strongest signal relative to its threshold; flagged when score >= 1. Each
-- signal `x` is returned with `x_threshold` and `x_score` (value / threshold), for `explain`.
-- Segment identity: `/<title>/<rendition>/<file>` with the rendition dropped, or for a range
-- request the file and its first byte. Positions: the number in the file name, or for ranges
-- the first byte over the rendition's typical request size.
--
-- @param bucket_s                 seconds 30   Length of a concurrency bucket.
-- @param min_concurrent_run       int     3    Consecutive buckets with two playbacks at once.
-- @param min_crowded_segments     int     2    Segments each fetched from 3+ addresses.
-- @param min_peak_playbacks       int     3    Playbacks at once within one bucket.
-- @param min_alternations         int     2    Address changes between consecutive requests for a bucket to count.
-- @param parallel_gap_segments    int     12   Positions this many segments apart are separate playbacks.
-- @param restream_rendition_share float   0.8  Share of an address's segments fetched in 2+ renditions.
-- @param restream_min_segments    int     20   Segments of one address needed before that share counts.
-- @param far_km                   float   2500 Edges farther apart than this serve separate viewers.
-- @param min_far_buckets          int     4    Buckets with edges more than far_km apart.

-- Statements before the last materialise what later ones read several times.

-- Each distinct user agent once, with its text: `positioned` then carries each request's
-- agent as a 64-bit key, where its text (a copy of the agents' dictionary in every batch)
-- would make it a third larger. Agents are matched against the tool pattern in the last
-- statement, over this table's few thousand rows: a filter here is pushed below the
-- aggregation by DataFusion and matched every request (~0.1 s of the cold hour).
-- distinct_values looks at each batch's dictionary of agents once, where a DISTINCT would
-- group every row's text.
CREATE TABLE user_agents AS
SELECT key64(agent) AS ua, agent
FROM (
    SELECT unnest(agents) AS agent
    FROM (
        SELECT distinct_values(user_agent) AS agents
        FROM requests
        WHERE epoch_s >= $window_start AND epoch_s < $window_end
    )
);

-- Session ids as text, once per session: the tables below carry the 64-bit key alone.
-- Both tables hold only the window's values: a run that parses whole hour files for a
-- shorter window (a first run, or a late file) has most of its rows outside the window.
CREATE TABLE session_ids AS
SELECT key64(session_id) AS session, session_id
FROM (
    SELECT unnest(ids) AS session_id
    FROM (SELECT distinct_values(session_id) AS ids FROM requests WHERE epoch_s >= $window_start AND epoch_s < $window_end)
);

CREATE TABLE positioned AS
WITH media AS (
    -- Keys as 64-bit integers (key64): DataFusion groups, sorts, joins and compares them
    -- several times faster than text. Only the result needs the session id's text
    -- (`session_ids`).
    -- The edge stays text (its code locates it), as string views: grouped by a view of a
    -- few bytes, not a dictionary turned into DataFusion's row format row by row.
    SELECT key64(session_id) AS session, epoch_s, epoch_s / $bucket_s AS bucket,
           key64(c_ip) AS addr, arrow_cast(edge, 'Utf8View') AS edge,
           CASE WHEN user_agent IS NOT NULL THEN key64(user_agent) END AS ua,
           CASE WHEN referer IS NOT NULL THEN key64(referer) END AS ref, sc_bytes, range_start,
           key64(title) AS title, key64(rendition) AS rendition, file_number,
           -- A segment is (title, file) across renditions; a range of one file is that file's
           -- range in its rendition (offsets differ between renditions).
           key64(title, file, CASE WHEN range_start IS NOT NULL THEN rendition END, range_start) AS segment
    FROM requests
    WHERE epoch_s >= $window_start AND epoch_s < $window_end
      AND status IN (200, 206)
      AND sc_bytes > 0
      -- Media segments only: manifests and init segments are fetched by every player anew.
      AND NOT (file LIKE '%.m3u8' OR file LIKE '%.mpd' OR file LIKE '%init%')
),
typical_size AS (
    -- The rendition's typical request size: turns a range's first byte into a position.
    SELECT session, rendition, greatest(avg(sc_bytes), 1) AS request_bytes
    FROM media
    GROUP BY session, rendition
)
-- Only what later statements read: this table is the query's largest.
SELECT m.session, m.epoch_s, m.bucket, m.addr, m.edge, m.ua, m.ref, m.range_start,
       m.title, m.rendition, m.segment,
       -- Where in the title a request plays, in segments: the file's number, or for one file
       -- fetched by ranges, the first byte over the rendition's typical request size.
       CASE WHEN m.range_start IS NOT NULL THEN CAST(m.range_start AS DOUBLE) / t.request_bytes
            ELSE CAST(m.file_number AS DOUBLE) END AS position
FROM media m
JOIN typical_size t ON t.session = m.session AND t.rendition = m.rendition;

-- Each address's fetches of each segment, read by three signals: repeats by another address,
-- crowded segments and parallel renditions. The first fetch's bucket follows from its time:
-- one accumulator fewer over the query's largest grouping.
CREATE TABLE fetches AS
SELECT session, segment, addr, min(epoch_s) AS first_fetch, max(epoch_s) AS last_fetch, min(epoch_s) / $bucket_s AS bucket,
       -- Whether the address fetched this segment in two or more renditions.
       min(rendition) <> max(rendition) AS several_renditions,
       -- A whole file, not ranges of one (the segment key tells them apart).
       min(range_start) IS NULL AS whole_file
FROM positioned
GROUP BY session, segment, addr;

-- Segments fetched from two or more addresses, with the first fetch among them: its time
-- and address packed into one orderable number (seconds into the window, then the low half
-- of the address key, which breaks ties within a second). Finding "not the first" by
-- comparing with this minimum costs a fraction of sorting every fetch.
CREATE TABLE shared_segments AS
SELECT session, segment, count(*) AS addresses,
       min((first_fetch - $window_start) * 4294967296 + (addr & 4294967295)) AS first_fetch_order
FROM fetches
GROUP BY session, segment
HAVING count(*) >= 2;

CREATE TABLE candidate_buckets AS
WITH duplicated AS (
    -- Per bucket, the addresses that fetched a segment another address had fetched before:
    -- each is one more playback of the same part.
    SELECT f.session, f.bucket, count(DISTINCT f.addr) AS later_addresses
    FROM fetches f
    JOIN shared_segments s ON s.session = f.session AND s.segment = f.segment
    WHERE (f.first_fetch - $window_start) * 4294967296 + (f.addr & 4294967295) > s.first_fetch_order
    GROUP BY f.session, f.bucket
),
per_address_bucket AS (
    SELECT session, bucket, title, addr, median(position) AS position, count(*) AS requests
    FROM positioned
    WHERE position IS NOT NULL
    GROUP BY session, bucket, title, addr
),
position_clusters AS (
    -- Per bucket and title, how many separate places addresses were playing: positions sorted,
    -- a gap of parallel_gap_segments or more starts another place.
    SELECT session, bucket, title,
           sum(CASE WHEN gap >= $parallel_gap_segments THEN 1 ELSE 0 END) + 1 AS places
    FROM (
        SELECT session, bucket, title,
               CASE WHEN (bucket = (lag(bucket) OVER w)) AND (title = (lag(title) OVER w))
                    THEN position - lag(position) OVER w END AS gap
        FROM per_address_bucket
        WHERE requests >= 2
        WINDOW w AS (PARTITION BY session ORDER BY bucket, title, position)
    )
    GROUP BY session, bucket, title
),
apart AS (
    -- Buckets where addresses played one title in two or more places at once.
    SELECT session, bucket, max(places) AS places
    FROM position_clusters
    WHERE places >= 2
    GROUP BY session, bucket
)
    -- Buckets with a sign of two playbacks: the places a title is played in, plus the
    -- addresses repeating a part someone else played.
    SELECT session, bucket,
           max(places) + max(later_addresses) AS playbacks,
           max(CASE WHEN later_addresses > 0 THEN 1 ELSE 0 END) AS dup,
           max(CASE WHEN places >= 2 THEN 1 ELSE 0 END) AS apart
    FROM (
        SELECT session, bucket, 1 AS places, later_addresses FROM duplicated
        UNION ALL
        SELECT session, bucket, places, 0 AS later_addresses FROM apart
    )
    GROUP BY session, bucket;

-- Buckets and the edges that served them: its own table, as the far-apart test joins it
-- with itself.
CREATE TABLE edge_buckets AS
SELECT DISTINCT p.session, p.bucket, e.latitude, e.longitude
FROM (SELECT DISTINCT session, bucket, edge FROM positioned) p
JOIN edge_locations e ON e.code = substr(CAST(p.edge AS VARCHAR), 1, 3);

WITH crowded AS (
    -- Segments fetched from three or more addresses: three playbacks, whenever they happened.
    SELECT session, count(*) AS crowded_segments, max(addresses) AS most_addresses_per_segment
    FROM (
        SELECT session, addresses
        FROM shared_segments
        WHERE addresses >= 3
    )
    GROUP BY session
),
addresses_per_bucket AS (
    -- In those buckets only: addresses seen, and how often consecutive requests (in time
    -- order) come from another address than the one before: a hand-off from one network to
    -- the next changes once; playbacks at the same time keep alternating.
    SELECT session, bucket, count(DISTINCT addr) AS addresses, sum(alternation) AS alternations
    FROM (
        SELECT p.session, p.bucket, p.addr,
               CASE WHEN (p.bucket = (lag(p.bucket) OVER w)) AND (p.addr <> (lag(p.addr) OVER w)) THEN 1 ELSE 0 END AS alternation
        FROM positioned p
        JOIN candidate_buckets c ON c.session = p.session AND c.bucket = p.bucket
        -- Requests of one second keep the order of their address keys: arbitrary, as any is.
        WINDOW w AS (PARTITION BY p.session ORDER BY p.bucket, p.epoch_s, p.addr)
    )
    GROUP BY session, bucket
),
concurrent_buckets AS (
    -- Playbacks at once in a bucket, never more than the addresses seen; only buckets whose
    -- addresses alternate are kept.
    SELECT c.session, c.bucket, least(c.playbacks, a.addresses) AS playbacks, c.dup, c.apart
    FROM candidate_buckets c
    JOIN addresses_per_bucket a ON a.session = c.session AND a.bucket = c.bucket
    WHERE a.alternations >= $min_alternations
),
islands AS (
    -- Consecutive buckets share bucket - row_number (gaps and islands).
    SELECT session, bucket, dup, apart, playbacks,
           bucket - row_number() OVER (PARTITION BY session ORDER BY bucket) AS island
    FROM concurrent_buckets
),
concurrency AS (
    SELECT session,
           max(run) AS concurrent_run,
           sum(run) AS concurrent_buckets,
           sum(dups) AS shared_buckets,
           sum(aparts) AS parallel_buckets,
           max(playbacks) AS peak_playbacks
    FROM (
        SELECT session, island, count(*) AS run, sum(dup) AS dups, sum(apart) AS aparts,
               max(playbacks) AS playbacks
        FROM islands
        GROUP BY session, island
    )
    GROUP BY session
),
renditions AS (
    SELECT session,
           max(segments) AS media_segments,
           max(CASE WHEN segments >= $restream_min_segments THEN share ELSE 0.0 END) AS rendition_share
    FROM (
        SELECT session, addr, count(*) AS segments,
               -- Renditions of one segment fetched within one bucket: a ladder pulled in
               -- parallel, not a seek back that fetched it again at another bitrate.
               avg(CASE WHEN several_renditions AND last_fetch - first_fetch <= $bucket_s THEN 1.0 ELSE 0.0 END) AS share
        FROM fetches
        WHERE whole_file
        GROUP BY session, addr
    )
    GROUP BY session
),
far AS (
    SELECT session, count(DISTINCT bucket) AS far_buckets, max(km) AS max_edge_km
    FROM (
        SELECT a.session, a.bucket,
               2 * 6371 * asin(sqrt(
                   power(sin(radians(b.latitude - a.latitude) / 2), 2)
                   + cos(radians(a.latitude)) * cos(radians(b.latitude))
                     * power(sin(radians(b.longitude - a.longitude) / 2), 2))) AS km
        FROM edge_buckets a JOIN edge_buckets b
          ON a.session = b.session AND a.bucket = b.bucket
         AND (a.latitude < b.latitude OR (a.latitude = b.latitude AND a.longitude < b.longitude))
    )
    WHERE km > $far_km
    GROUP BY session
),
agents AS (
    -- The agents of a session, and whether one is a tool's rather than a player's.
    SELECT a.session, count(*) AS user_agents,
           CAST(max(CASE WHEN t.ua IS NOT NULL THEN 1 ELSE 0 END) AS DOUBLE) AS tool_agent
    FROM (SELECT DISTINCT session, ua FROM positioned WHERE ua IS NOT NULL) a
    LEFT JOIN (
        SELECT ua FROM user_agents
        WHERE regexp_like(agent, '(?i)(lavf|ffmpeg|libvlc|vlc/|curl/|wget|python|streamlink|kodi|go-http|okhttp/[0-9]|mpv)')
    ) t ON t.ua = a.ua
    GROUP BY a.session
),
referers AS (
    SELECT session, count(DISTINCT ref) AS referers FROM positioned GROUP BY session
),
sessions AS (
    -- One distinct count per aggregation: DataFusion turns it into a cheap two-level
    -- grouping, where several distinct counts in one aggregation cost a set per session.
    SELECT session, count(DISTINCT addr) AS ips, max(epoch_s) - min(epoch_s) AS duration_s
    FROM positioned
    GROUP BY session
),
signals AS (
    SELECT s.*, n.session_id,
           coalesce(a.user_agents, 0) AS user_agents,
           coalesce(a.tool_agent, 0.0) AS tool_agent,
           coalesce(rf.referers, 0) AS referers,
           coalesce(c.concurrent_run, 0) AS concurrent_run,
           coalesce(c.concurrent_buckets, 0) AS concurrent_buckets,
           coalesce(c.shared_buckets, 0) AS shared_buckets,
           coalesce(c.parallel_buckets, 0) AS parallel_buckets,
           coalesce(cr.crowded_segments, 0) AS crowded_segments,
           coalesce(cr.most_addresses_per_segment, 0) AS most_addresses_per_segment,
           coalesce(c.peak_playbacks, 1) AS peak_playbacks,
           coalesce(r.media_segments, 0) AS media_segments,
           coalesce(r.rendition_share, 0.0) AS rendition_share,
           coalesce(f.far_buckets, 0) AS far_buckets,
           f.max_edge_km
    FROM sessions s
    JOIN session_ids n ON n.session = s.session
    LEFT JOIN agents a ON a.session = s.session
    LEFT JOIN referers rf ON rf.session = s.session
    LEFT JOIN concurrency c ON c.session = s.session
    LEFT JOIN crowded cr ON cr.session = s.session
    LEFT JOIN renditions r ON r.session = s.session
    LEFT JOIN far f ON f.session = s.session
),
scored AS (
    SELECT *,
        CAST(concurrent_run AS DOUBLE) / $min_concurrent_run AS concurrent_run_score,
        CAST(crowded_segments AS DOUBLE) / $min_crowded_segments AS crowded_segments_score,
        -- One playback is ordinary: the score counts playbacks beyond the first.
        CAST(peak_playbacks - 1 AS DOUBLE) / greatest($min_peak_playbacks - 1, 1) AS peak_playbacks_score,
        rendition_share / $restream_rendition_share AS rendition_share_score,
        CAST(far_buckets AS DOUBLE) / $min_far_buckets AS far_buckets_score
    FROM signals
),
decided AS (
    SELECT *, greatest(concurrent_run_score, crowded_segments_score, peak_playbacks_score, rendition_share_score,
                       far_buckets_score) AS score
    FROM scored
)
SELECT
    session_id,
    score,
    score >= 1.0 AS flagged,
    -- Every signal seen, with its value and threshold; one below its threshold says so, as
    -- the reasons kept with a revocation must not read as if it had counted.
    concat_ws('; ',
        CASE WHEN concurrent_run > 0 THEN concat(
            'two playbacks at once for ', concurrent_run, ' consecutive x ', $bucket_s, 's (',
            shared_buckets, ' with a segment fetched from 2+ addresses, ', parallel_buckets,
            ' with addresses ', $parallel_gap_segments, '+ segments apart), threshold ', $min_concurrent_run,
            CASE WHEN concurrent_run_score < 1.0 THEN ' (not reached)' ELSE '' END) END,
        CASE WHEN crowded_segments > 0 THEN concat(
            '3+ playbacks: ', crowded_segments, ' segments each fetched from 3+ addresses (up to ',
            most_addresses_per_segment, '), threshold ', $min_crowded_segments,
            CASE WHEN crowded_segments_score < 1.0 THEN ' (not reached)' ELSE '' END) END,
        CASE WHEN peak_playbacks >= 3 THEN concat(
            peak_playbacks, ' playbacks within one ', $bucket_s, 's bucket (places ', $parallel_gap_segments,
            '+ segments apart, plus addresses repeating what another played), threshold ', $min_peak_playbacks,
            CASE WHEN peak_playbacks_score < 1.0 THEN ' (not reached)' ELSE '' END) END,
        CASE WHEN rendition_share > 0 THEN concat(
            'parallel renditions: one address fetched ', round(rendition_share * 100, 1), '% of its ',
            media_segments, ' segments in 2+ renditions, threshold ', round($restream_rendition_share * 100, 1), '%',
            CASE WHEN rendition_share_score < 1.0 THEN ' (not reached)' ELSE '' END) END,
        CASE WHEN far_buckets > 0 THEN concat(
            'edges ', round(max_edge_km, 0), ' km apart at once in ', far_buckets, ' x ', $bucket_s,
            's (> ', $far_km, ' km), threshold ', $min_far_buckets,
            CASE WHEN far_buckets_score < 1.0 THEN ' (not reached)' ELSE '' END) END,
        CASE WHEN tool_agent > 0 THEN 'non-player user agent (ffmpeg/VLC/curl/...)' END,
        CASE WHEN score < 1.0 THEN concat('score ', round(score, 2), ' < 1: not flagged') END
    ) AS reasons,
    1.0 AS threshold,
    concurrent_run, $min_concurrent_run AS concurrent_run_threshold, concurrent_run_score,
    crowded_segments, $min_crowded_segments AS crowded_segments_threshold, crowded_segments_score,
    peak_playbacks, $min_peak_playbacks AS peak_playbacks_threshold, peak_playbacks_score,
    rendition_share, $restream_rendition_share AS rendition_share_threshold, rendition_share_score,
    far_buckets, $min_far_buckets AS far_buckets_threshold, far_buckets_score,
    most_addresses_per_segment, concurrent_buckets, shared_buckets, parallel_buckets, media_segments,
    max_edge_km, ips, user_agents, referers, duration_s, tool_agent
FROM decided
