-- wrk script of benchmarks/serving.py: POST a small body, report the run as one JSON line.
--
-- Every request is `POST <url>` with HTTPBENCH_BODY (default 32 bytes) as an
-- application/octet-stream body.  With HTTPBENCH_SERVICE_TIME=1 every response
-- body is read as a number (the seconds the cpu model spent in its worker)
-- and the sum and count go into the report; otherwise no `response` hook is
-- defined, so wrk does not call into Lua per response.
--
-- done() prints one line, `HTTPBENCH {...}`, with the request count, the
-- duration (µs), the errors by kind, the latency percentiles (µs) and the
-- service-time sum and count.

wrk.method = "POST"
wrk.body = os.getenv("HTTPBENCH_BODY") or "0123456789abcdef0123456789abcdef"
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   service_sum = 0
   service_count = 0
end

if os.getenv("HTTPBENCH_SERVICE_TIME") == "1" then
   function response(status, headers, body)
      local seconds = tonumber(body)
      if status == 200 and seconds then
         service_sum = service_sum + seconds
         service_count = service_count + 1
      end
   end
end

function done(summary, latency, requests)
   local service_sum, service_count = 0, 0
   for _, thread in ipairs(threads) do
      service_sum = service_sum + (thread:get("service_sum") or 0)
      service_count = service_count + (thread:get("service_count") or 0)
   end
   local e = summary.errors
   local parts = {
      string.format('"requests": %d', summary.requests),
      string.format('"duration_us": %d', summary.duration),
      string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
                    e.connect, e.read, e.write, e.status, e.timeout),
      string.format('"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p99.9": %d}',
                    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
                    latency:percentile(99), latency:percentile(99.9)),
      string.format('"service_sum": %.9f, "service_count": %d', service_sum, service_count),
   }
   io.write("HTTPBENCH {" .. table.concat(parts, ", ") .. "}\n")
end
