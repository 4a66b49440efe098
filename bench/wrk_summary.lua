-- wrk reporter: prints one machine-readable line that bench/run.sh and
-- bench/pipeline.sh parse (parse_wrk_summary in bench/lib.sh), so the scripts
-- do not depend on wrk's human-oriented output format. Latencies are in
-- microseconds; duration is wrk's own measured run time.
-- bench/pipeline/tokens.lua loads this file for write_summary.
function write_summary(summary, latency)
  local e = summary.errors
  io.write(string.format(
    "WRK_SUMMARY requests=%d duration_us=%d status_errors=%d " ..
    "socket_errors=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

done = function(summary, latency, _requests)
  write_summary(summary, latency)
end
