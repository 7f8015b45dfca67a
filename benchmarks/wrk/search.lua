-- POST /search with a distinct text query on every request (a running number: never in the server's
-- query cache). Words come from WRK_WORDS (a file, one per line) when set. The summary is printed as one
-- JSON line that benchmarks/server_load.py reads.
local words = {"smiling face", "red heart", "cat", "dog face", "rocket", "pizza", "sun with face", "crying face"}
local n = 0

init = function(args)
  local path = os.getenv("WRK_WORDS")
  if path then
    local loaded = {}
    for line in io.lines(path) do
      if #line > 0 then loaded[#loaded + 1] = line end
    end
    if #loaded > 0 then words = loaded end
  end
  n = tonumber(args[1] or "0") or 0
end

local function quoted(s)
  return (s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end))
end

request = function()
  n = n + 1
  local body = string.format('{"text": "%s %d", "k": 10}', quoted(words[(n % #words) + 1]), n)
  return wrk.format("POST", "/search", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_s": %.3f, "socket_errors": %d, "non_2xx": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
