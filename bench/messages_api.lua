-- Lists pages of messages as many users, for bench/messages_api.py.
-- Usage: wrk -s bench/messages_api.lua URL -- REQUESTS_FILE
-- Each line of REQUESTS_FILE is "TOKEN<TAB>PATH" (a first page or a cursor page of one
-- user's inbox). Thread N starts at line N * (lines / threads) and goes round, so the
-- threads spread over all users rather than ask for the same pages in step.

local threads = {}
local lines = {}
local pos = 1

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local token, path = string.match(line, "^(%S+)\t(%S+)$")
    if token then
      table.insert(lines, wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token }))
    end
  end
  if #lines == 0 then
    error("no requests in " .. args[1])
  end
  pos = (id * 7919) % #lines + 1
end

function request()
  local raw = lines[pos]
  pos = pos % #lines + 1
  return raw
end
