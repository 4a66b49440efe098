-- wrk script for the "uncached JWT" row of bench/pipeline.sh: every request
-- carries the next token of TOKEN_FILE (one token per line) as
-- "Authorization: Bearer", so the gateway's token cache (keyed by the token's
-- SHA-256) never hits as long as fewer requests are sent than there are tokens.
--
-- Prints the WRK_SUMMARY line of bench/wrk_summary.lua (loaded from there)
-- plus "WRK_TOKENS used=N available=M": N > M means tokens repeated.

-- write_summary() comes from bench/wrk_summary.lua, one directory up from here.
-- (That file's done() is replaced by the one below.)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../wrk_summary.lua")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state. init() runs before wrk starts its clock, so loading the
-- file is not part of the measured run.
local tokens, available, headers = {}, 0, {}
used = 0   -- global: read from done() through thread:get

function init(_args)
  local path = os.getenv("TOKEN_FILE") or error("TOKEN_FILE is not set")
  for line in io.lines(path) do
    if #line > 0 then
      available = available + 1
      tokens[available] = line
    end
  end
  if available == 0 then error("no tokens in " .. path) end
  navailable = available
end

function request()
  used = used + 1
  headers["Authorization"] = "Bearer " .. tokens[(used - 1) % available + 1]
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, _requests)
  write_summary(summary, latency)
  local total, avail = 0, 0
  for _, t in ipairs(threads) do
    total = total + (t:get("used") or 0)
    avail = t:get("navailable") or 0
  end
  io.write(string.format("WRK_TOKENS used=%d available=%d\n", total, avail))
end
