-- Replays pre-signed Twilio inbound-SMS webhooks written by bench/webhook.py.
-- Usage: wrk -s bench/webhook.lua URL -- PREFIX
-- Thread N sends the lines of PREFIX-N.tsv ("signature<TAB>form body") in order, so no
-- MessageSid is sent twice unless a file runs out and wraps; done() prints how often
-- that happened ("webhook.lua: wraps N") so that the caller can refuse the run.

local threads = {}
local loaded = {}
local pos = 0
wraps = 0 -- a global, so that done() can read it with thread:get()

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = string.format("%s-%d.tsv", args[1], id)
  for line in io.lines(path) do
    local signature, body = line:match("^([^\t]+)\t(.+)$")
    loaded[#loaded + 1] = wrk.format("POST", wrk.path, {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = signature,
    }, body)
  end
  if #loaded == 0 then
    error("no requests in " .. path)
  end
end

function request()
  pos = pos + 1
  if pos > #loaded then
    pos = 1
    wraps = wraps + 1
  end
  return loaded[pos]
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("wraps")
  end
  io.write(string.format("webhook.lua: wraps %d\n", total))
end
