-- GET load that ends wrk after BENCH_STOP_AFTER responses (default 20000), so a run sends a
-- bounded number of requests (scenario memory). Use it with -t 1: the count is per thread.
-- wrk's own timer cannot be cut short (thread:stop() still waits out -d), so this script prints
-- its own summary line and exits the process; done() is never reached.
local limit = tonumber(os.getenv("BENCH_STOP_AFTER") or "20000")
local seen = 0
local bad = 0
local started = os.time()

function response(status, headers, body)
   seen = seen + 1
   if status < 200 or status > 299 then
      bad = bad + 1
   end
   if seen >= limit then
      io.write(string.format('BENCH_STOPPED {"responses":%d,"non2xx":%d,"seconds":%d}\n',
                             seen, bad, os.time() - started))
      io.flush()
      os.exit(0)
   end
end
