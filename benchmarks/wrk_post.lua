-- wrk script: POST requests with a body and headers taken from the environment.
--
-- BENCH_BODY_FILE    one body, sent with every request
-- BENCH_BODIES_FILE  one body per line, each sent once (wraps around if exhausted; counted)
-- BENCH_AUTH         Authorization header value for every request
-- BENCH_AUTH_FILE    one Authorization value per line, each sent once (wraps around; counted)
-- BENCH_CONTENT_TYPE Content-Type header
-- BENCH_HEADERS      extra headers as a flat JSON object of strings {"A2A-Version": "1.0"}
-- BENCH_EXPECT       a substring every response body must contain (else counted as an error)
-- BENCH_THREADS      wrk's thread count: with several threads, each sends its own share of
--                    the bodies / Authorization values (thread i sends lines i, i+T, ...)
--
-- Prints "bench-status-errors N" and "bench-reused N" at the end.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

local function read_all(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

local function read_lines(path)
   local out = {}
   for line in io.lines(path) do
      if #line > 0 then
         table.insert(out, line)
      end
   end
   return out
end

local function parse_headers(text)
   local headers = {}
   if text == nil then
      return headers
   end
   for k, v in string.gmatch(text, '"([^"]+)"%s*:%s*"([^"]*)"') do
      headers[k] = v
   end
   return headers
end

local body = nil
local bodies = nil
local auths = nil
local static_request = nil
local index = 0
local stride = 1
local expect = nil
status_errors = 0
reused = 0

function init(args)
   -- Keep wrk's own headers (Host) and add ours.
   local headers = wrk.headers
   for k, v in pairs(parse_headers(os.getenv("BENCH_HEADERS"))) do
      headers[k] = v
   end
   headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
   local auth = os.getenv("BENCH_AUTH")
   if auth ~= nil and #auth > 0 then
      headers["Authorization"] = auth
   end
   local body_file = os.getenv("BENCH_BODY_FILE")
   if body_file ~= nil and #body_file > 0 then
      body = read_all(body_file)
   end
   local bodies_file = os.getenv("BENCH_BODIES_FILE")
   if bodies_file ~= nil and #bodies_file > 0 then
      bodies = read_lines(bodies_file)
   end
   local auth_file = os.getenv("BENCH_AUTH_FILE")
   if auth_file ~= nil and #auth_file > 0 then
      auths = read_lines(auth_file)
   end
   stride = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
   index = (thread_id or 1) - 1 - stride  -- the first request() moves to line thread_id
   expect = os.getenv("BENCH_EXPECT")
   if expect ~= nil and #expect == 0 then
      expect = nil
   end
   if bodies == nil and auths == nil then
      static_request = wrk.format("POST", nil, headers, body)
   end
end

function request()
   if static_request ~= nil then
      return static_request
   end
   index = index + stride
   local b = body
   local headers = wrk.headers
   if bodies ~= nil then
      if index >= #bodies then
         reused = reused + 1
      end
      b = bodies[(index % #bodies) + 1]
   end
   if auths ~= nil then
      if index >= #auths then
         reused = reused + 1
      end
      headers["Authorization"] = auths[(index % #auths) + 1]
   end
   return wrk.format("POST", nil, headers, b)
end

function response(status, headers, resp_body)
   if status < 200 or status > 299 then
      status_errors = status_errors + 1
   elseif expect ~= nil and not string.find(resp_body, expect, 1, true) then
      status_errors = status_errors + 1
   end
end

function done(summary, latency, requests)
   local bad = 0
   local again = 0
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("status_errors") or 0)
      again = again + (thread:get("reused") or 0)
   end
   io.write(string.format("bench-status-errors %d\n", bad))
   io.write(string.format("bench-reused %d\n", again))
end
