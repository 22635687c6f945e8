-- aocu test process: a small AOS-like process. State lives in Lua memory (linear memory), so it
-- survives across messages and across snapshot/restore of the memory image.
local json = require("json")

local process = { _version = "aocu-test-1" }

-- Persistent state (globals so Eval can see it, like AOS).
Count = Count or 0
Held = Held or {}         -- strings kept alive by "Grow"
Reference = Reference or 0

local PROMPT = "aocu> "
local orig_time = os.time

local function tag(msg, name)
  if type(msg.Tags) ~= "table" then return nil end
  for _, t in ipairs(msg.Tags) do
    if type(t) == "table" and t.name == name then return t.value end
  end
  return nil
end

local function str(v)
  if v == nil or v == json.null then return "" end
  return tostring(v)
end

local function output(data)
  return { data = data, prompt = PROMPT, print = true }
end

local function result(out)
  return {
    Output = out,
    Messages = json.array({}),
    Spawns = json.array({}),
    Assignments = json.array({}),
  }
end

-- Serialise an Eval result like AOS does for its console: tables as JSON, the rest via tostring.
local function show(v)
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    if ok then return s end
  end
  return tostring(v)
end

local function next_ref()
  Reference = Reference + 1
  return Reference
end

local function base_tags(kind, ref)
  return {
    { name = "Data-Protocol", value = "ao" },
    { name = "Variant", value = "ao.TN.1" },
    { name = "Type", value = kind },
    { name = "Reference", value = tostring(ref) },
  }
end

local actions = {}

function actions.Eval(msg)
  local code = str(msg.Data)
  local printed = {}
  local saved_print = print
  print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    printed[#printed + 1] = table.concat(parts, "\t", 1, parts.n)
  end
  local fn, err = load("return " .. code, "aos", "t", _G)
  if not fn then fn, err = load(code, "aos", "t", _G) end
  local ok, value
  if fn then
    ok, value = pcall(fn)
  else
    ok, value = false, err
  end
  print = saved_print
  if not ok then
    return { Error = str(value) }
  end
  local text = table.concat(printed, "\n")
  if value ~= nil then
    text = (#text > 0) and (text .. "\n" .. show(value)) or show(value)
  end
  return result(output(text))
end

function actions.Echo(msg)
  return result(str(msg.Data))
end

function actions.Count()
  Count = Count + 1
  return result(Count)
end

function actions.Time()
  local now = os.time()   -- msg.Timestamp (ms), like AOS
  local secs = now // 1000
  return result({
    time = now,
    date = os.date("!%Y-%m-%dT%H:%M:%S", secs),
    weekday = os.date("!%A %B %j", secs),
    mktime = orig_time({ year = 2024, month = 1, day = 1, hour = 0 }),
  })
end

-- Deterministic seed like AOS (process/process.lua): Block-Height followed by the byte sum of
-- Owner .. Module .. Id, reduced to 31 bits so the C cast in math.randomseed is well defined.
local function seed_from(msg, env)
  local module = (type(env) == "table" and type(env.Module) == "table" and env.Module.Id) or ""
  local s = str(msg.Owner) .. str(module) .. str(msg.Id)
  local sum = 0
  for i = 1, #s do sum = sum + s:byte(i) end
  local height = math.tointeger(tonumber(str(msg["Block-Height"])) or 0) or 0
  return (height * 1000003 + sum) % 2147483647
end

function actions.Random(msg, env)
  local seed = seed_from(msg, env)
  math.randomseed(seed)
  return result({ seed = seed, values = json.array({ math.random(1, 1000000), math.random(1, 1000000),
    math.random(1, 1000000) }) })
end

function actions.Exec(msg)
  local ok, err, code = os.execute(str(msg.Data))
  return result({ ok = ok or false, error = err and tostring(err) or json.null, code = code or json.null })
end

function actions.Getenv(msg)
  local v = os.getenv(str(msg.Data))
  return result(v == nil and json.null or v)
end

function actions.Grow(msg)
  local mib = math.tointeger(tonumber(str(msg.Data)) or 16) or 16
  for i = 1, mib do
    -- distinct contents per chunk so nothing is shared or interned
    Held[#Held + 1] = string.rep(string.char(65 + (#Held % 26)), 1024 * 1024 - 8) .. string.format("%08d", i)
  end
  return result({ held_mib = #Held, lua_kib = math.floor(collectgarbage("count")) })
end

function actions.Free()
  Held = {}
  collectgarbage()
  return result({ held_mib = 0 })
end

function actions.Loop()
  local n = 0
  while true do n = n + 1 end
end

function actions.Fail(msg)
  error("Fail requested: " .. str(msg.Data))
end

function actions.Send(msg, env)
  local pid = (type(env) == "table" and type(env.Process) == "table" and env.Process.Id) or ""
  local module = (type(env) == "table" and type(env.Module) == "table" and env.Module.Id) or ""
  local target = tag(msg, "Send-To") or str(msg.From)
  local ref = next_ref()
  local mtags = base_tags("Message", ref)
  mtags[#mtags + 1] = { name = "Action", value = "Echo" }
  local message = { Target = target, Data = str(msg.Data), Anchor = string.format("%032d", ref), Tags = mtags }
  local sref = next_ref()
  local stags = base_tags("Process", sref)
  table.insert(stags, 4, { name = "From-Process", value = pid })
  table.insert(stags, 5, { name = "From-Module", value = module })
  table.insert(stags, 6, { name = "Module", value = module })
  local spawn = { Data = "NODATA", Anchor = string.format("%032d", sref), Tags = stags }
  local assignment = { Processes = json.array({ target }), Message = str(msg.Id) }
  local res = result(output("sent " .. ref))
  res.Messages = json.array({ message })
  res.Spawns = json.array({ spawn })
  res.Assignments = json.array({ assignment })
  return res
end

-- WeaveDrive (formats 4 / wasm64 only): Data = a path such as /data/<txid> or /block/<height>.
function actions.Load(msg)
  if type(weavedrive) ~= "table" then
    return result({ ok = false, error = "weavedrive: not in this module format" })
  end
  local data, err = weavedrive.load(str(msg.Data))
  if data == nil then return result({ ok = false, error = err }) end
  -- the data may be binary: report its size, a byte sum and the first bytes in hex, not the raw bytes
  local sum = 0
  for i = 1, #data do sum = (sum + data:byte(i)) % 4294967296 end
  local head = data:sub(1, 16):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  return result({ ok = true, size = #data, sum = sum, head = head })
end

function actions.Info()
  local gas = (type(weavedrive) == "table") and weavedrive.gas_used() or json.null
  return result({ version = process._version, lua = _VERSION, count = Count, held_mib = #Held, gas_used = gas })
end

function process.handle(msg, env)
  if type(msg) ~= "table" then error("message is not a JSON object") end
  -- AOS replaces os.time with the message timestamp (ms); os.time(t) keeps the C behaviour.
  local ts = math.tointeger(tonumber(str(msg.Timestamp)) or 0) or 0
  os.time = function(t)
    if t ~= nil then return orig_time(t) end
    return ts
  end
  local action = tag(msg, "Action")
  local fn = action and actions[action]
  if not fn then
    return result(output("unknown action: " .. str(action)))
  end
  return fn(msg, env)
end

return process
