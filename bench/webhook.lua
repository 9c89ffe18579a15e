-- Replays pre-signed Twilio inbound-SMS webhooks written by bench/webhook.py.
-- Usage: wrk -s bench/webhook.lua URL -- PREFIX
-- Thread N sends the raw HTTP requests in PREFIX-N.http (each followed by a NUL byte)
-- in order, so no MessageSid is sent twice unless the file runs out and wraps; done()
-- prints how often that happened ("webhook.lua: wraps N") so that the caller can refuse
-- the run. The requests are built (signed, formatted) beforehand and init() only reads
-- the file: wrk starts each thread as soon as its init() returns, so a slow init() gives
-- the first thread a head start that inflates req/s.

local threads = {}
local data = ""
local pos = 1
wraps = 0 -- a global, so that done() can read it with thread:get()

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = string.format("%s-%d.http", args[1], id)
  local file = assert(io.open(path, "rb"))
  data = file:read("*a")
  file:close()
  if #data == 0 then
    error("no requests in " .. path)
  end
end

function request()
  local stop = string.find(data, "\0", pos, true)
  if stop == nil then
    wraps = wraps + 1
    pos = 1
    stop = string.find(data, "\0", pos, true)
  end
  local raw = string.sub(data, pos, stop - 1)
  pos = stop + 1
  return raw
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("wraps")
  end
  io.write(string.format("webhook.lua: wraps %d\n", total))
end
