-- Loader run once at Lua boot (mirrors ao dev-cli core/loader.lua): defines the global handle()
-- that the C wrapper calls with the message and env JSON strings.
local json = require("json")
local process = require(".process")

function handle(msgJSON, envJSON)
  -- Decoding happens outside the pcall, like dev-cli: malformed input makes the C wrapper return "".
  local msg = json.decode(msgJSON)
  local env = json.decode(envJSON)
  local status, response = pcall(function() return process.handle(msg, env) end)
  local responseJSON = json.encode({ ok = status, response = response })
  response = nil
  collectgarbage()
  return responseJSON
end
