-- wrk script shared by every workload of bench_single_node.py.
--
--   wrk ... -s kv.lua -- <system> <op> <keys> <value_bytes> [seed]
--     system: httpcoord | etcd        op: get | put
--
-- Requests are built once per thread in init() (one per key, a random small
-- value per key for PUTs), then request() picks a key at random, so wrk
-- itself spends as little CPU as possible per request.
-- done() prints one parseable line:
--   WRK_RESULT requests=.. duration_us=.. p50_us=.. p99_us=.. mean_us=.. max_us=..
--              connect_errors=.. read_errors=.. write_errors=.. timeouts=.. non2xx=..
-- non2xx counts responses with status >= 400 (wrk's own definition); the
-- driver treats them, and every socket error, as failures.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(n / 262144) % 64
      local c2 = math.floor(n / 4096) % 64
      local c3 = math.floor(n / 64) % 64
      local c4 = n % 64
      out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
         .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

local ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

local function value(n)
   local t = {}
   for i = 1, n do
      local r = math.random(1, #ALNUM)
      t[i] = ALNUM:sub(r, r)
   end
   return table.concat(t)
end

local thread_counter = 0

function setup(thread)
   thread_counter = thread_counter + 1
   thread:set("thread_no", thread_counter)
end

local requests = {}
local nreq = 0

function init(args)
   local system, op = args[1], args[2]
   local keys = tonumber(args[3] or "1000")
   local vbytes = tonumber(args[4] or "32")
   local seed = tonumber(args[5] or "1")
   math.randomseed(seed * 1000 + (thread_no or 0))
   for k = 0, keys - 1 do
      local name = string.format("k%05d", k)
      local req
      if system == "httpcoord" then
         local path = "/v1/nodes/bench/" .. name
         if op == "get" then
            req = wrk.format("GET", path)
         else
            req = wrk.format("PUT", path, { ["Content-Type"] = "application/octet-stream" },
                             value(vbytes))
         end
      elseif system == "etcd" then
         local key = b64("/bench/" .. name)
         local headers = { ["Content-Type"] = "application/json" }
         if op == "get" then
            req = wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. key .. '"}')
         else
            req = wrk.format("POST", "/v3/kv/put", headers,
                             '{"key":"' .. key .. '","value":"' .. b64(value(vbytes)) .. '"}')
         end
      else
         error("unknown system " .. tostring(system))
      end
      requests[k + 1] = req
   end
   nreq = keys
end

function request()
   return requests[math.random(1, nreq)]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f max_us=%d "
         .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d non2xx=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.mean, latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
