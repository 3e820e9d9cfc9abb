-- wrk script of bench_cluster.py: kv.lua's requests and WRK_RESULT line, plus
-- a grid of latency percentiles, so that the latencies of several wrk
-- processes (one per cluster member) can be pooled into one p50/p99.
--
--   wrk ... -s cluster.lua -- <system> <op> <keys> <value_bytes> [seed]
--
-- done() adds one line:
--   WRK_PCT p:us,p:us,...   (p from 0.25 to 90 by 0.25, then to 100 by 0.05)
-- (this wrk build's latency[i] returns no bucket count, so the histogram
-- itself cannot be printed; a fine percentile grid is the next best thing.)

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "kv.lua")

local kv_done = done

function done(summary, latency, requests)
   kv_done(summary, latency, requests)
   local out = {}
   local function add(p)
      out[#out + 1] = string.format("%.2f:%d", p, latency:percentile(p))
   end
   for i = 1, 360 do
      add(i * 0.25)
   end
   for i = 1, 200 do
      add(90 + i * 0.05)
   end
   io.write("WRK_PCT " .. table.concat(out, ",") .. "\n")
end
