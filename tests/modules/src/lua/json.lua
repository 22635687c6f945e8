-- Small strict JSON codec for the aocu test process (Lua 5.3).
-- Arrays: a table marked with json.array(), or any table whose keys are exactly 1..n (n >= 1).
-- Empty unmarked tables encode as {}. json.null stands for JSON null.
local json = {}

local ARRAY = {}
json.null = setmetatable({}, { __tostring = function() return "null" end })

function json.array(t)
  return setmetatable(t or {}, { __jsontype = ARRAY })
end

local function is_array(t)
  local mt = getmetatable(t)
  if mt and mt.__jsontype == ARRAY then return true, #t end
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    if k > n then n = k end
  end
  if n == 0 then return false end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true, n
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode_number(x)
  if math.type(x) == "integer" then return string.format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then
    error("json: cannot encode non-finite number " .. tostring(x))
  end
  if x == math.floor(x) and math.abs(x) < 2 ^ 53 then
    return string.format("%d", math.tointeger(x))
  end
  for prec = 14, 17 do
    local s = string.format("%." .. prec .. "g", x)
    if tonumber(s) == x then return s end
  end
  return string.format("%.17g", x)
end

local encode_value

local function encode_table(t, stack)
  if stack[t] then error("json: circular reference") end
  stack[t] = true
  local out = {}
  local arr, n = is_array(t)
  if arr then
    for i = 1, n do out[i] = encode_value(t[i], stack) end
    stack[t] = nil
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("json: object key must be a string, got " .. type(k)) end
    keys[#keys + 1] = k
  end
  table.sort(keys) -- deterministic output
  for i, k in ipairs(keys) do
    out[i] = encode_string(k) .. ":" .. encode_value(t[k], stack)
  end
  stack[t] = nil
  return "{" .. table.concat(out, ",") .. "}"
end

function encode_value(v, stack)
  local tv = type(v)
  if v == nil or v == json.null then return "null" end
  if tv == "boolean" then return v and "true" or "false" end
  if tv == "number" then return encode_number(v) end
  if tv == "string" then return encode_string(v) end
  if tv == "table" then return encode_table(v, stack) end
  error("json: cannot encode value of type " .. tv)
end

function json.encode(v)
  return encode_value(v, {})
end

-- Decoder ---------------------------------------------------------------------------------------

local function decode_error(str, pos, what)
  error(string.format("json: %s at byte %d", what, pos), 0)
end

local function skip_ws(str, pos)
  return (str:find("[^ \t\r\n]", pos)) or (#str + 1)
end

local function utf8_char(cp)
  return utf8.char(cp)
end

local decode_value

local function decode_string(str, pos)
  -- pos points at the opening quote
  local parts = {}
  local i = pos + 1
  while true do
    local j = str:find('["\\%c]', i)
    if not j then decode_error(str, pos, "unterminated string") end
    if j > i then parts[#parts + 1] = str:sub(i, j - 1) end
    local c = str:sub(j, j)
    if c == '"' then
      return table.concat(parts), j + 1
    elseif c == "\\" then
      local e = str:sub(j + 1, j + 1)
      local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" })[e]
      if simple then
        parts[#parts + 1] = simple
        i = j + 2
      elseif e == "u" then
        local hex = str:match("^%x%x%x%x", j + 2)
        if not hex then decode_error(str, j, "bad \\u escape") end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = str:match("^\\u(%x%x%x%x)", i)
          local lov = lo and tonumber(lo, 16)
          if lov and lov >= 0xDC00 and lov <= 0xDFFF then
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lov - 0xDC00)
            i = i + 6
          end
        end
        parts[#parts + 1] = utf8_char(cp)
      else
        decode_error(str, j, "bad escape")
      end
    else
      decode_error(str, j, "control character in string")
    end
  end
end

local function decode_number(str, pos)
  local num = str:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not num then decode_error(str, pos, "bad number") end
  local v = tonumber(num)
  if not v then decode_error(str, pos, "bad number '" .. num .. "'") end
  return v, pos + #num
end

local function decode_array(str, pos)
  local res = json.array({})
  local n = 0
  pos = skip_ws(str, pos + 1)
  if str:sub(pos, pos) == "]" then return res, pos + 1 end
  while true do
    local v
    v, pos = decode_value(str, pos)
    n = n + 1
    res[n] = v
    pos = skip_ws(str, pos)
    local c = str:sub(pos, pos)
    if c == "]" then return res, pos + 1 end
    if c ~= "," then decode_error(str, pos, "expected ',' or ']'") end
    pos = skip_ws(str, pos + 1)
  end
end

local function decode_object(str, pos)
  local res = {}
  pos = skip_ws(str, pos + 1)
  if str:sub(pos, pos) == "}" then return res, pos + 1 end
  while true do
    if str:sub(pos, pos) ~= '"' then decode_error(str, pos, "expected string key") end
    local k
    k, pos = decode_string(str, pos)
    pos = skip_ws(str, pos)
    if str:sub(pos, pos) ~= ":" then decode_error(str, pos, "expected ':'") end
    pos = skip_ws(str, pos + 1)
    local v
    v, pos = decode_value(str, pos)
    res[k] = v
    pos = skip_ws(str, pos)
    local c = str:sub(pos, pos)
    if c == "}" then return res, pos + 1 end
    if c ~= "," then decode_error(str, pos, "expected ',' or '}'") end
    pos = skip_ws(str, pos + 1)
  end
end

function decode_value(str, pos)
  local c = str:sub(pos, pos)
  if c == "{" then return decode_object(str, pos) end
  if c == "[" then return decode_array(str, pos) end
  if c == '"' then return decode_string(str, pos) end
  if c == "-" or c:match("%d") then return decode_number(str, pos) end
  if str:sub(pos, pos + 3) == "true" then return true, pos + 4 end
  if str:sub(pos, pos + 4) == "false" then return false, pos + 5 end
  if str:sub(pos, pos + 3) == "null" then return json.null, pos + 4 end
  decode_error(str, pos, "unexpected character '" .. c .. "'")
end

function json.decode(str)
  if type(str) ~= "string" then error("json: expected string, got " .. type(str)) end
  local v, pos = decode_value(str, skip_ws(str, 1))
  pos = skip_ws(str, pos)
  if pos <= #str then decode_error(str, pos, "trailing garbage") end
  return v
end

return json
