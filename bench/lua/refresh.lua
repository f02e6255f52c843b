-- POST /v1/auth/token/refresh: a refresh token is single use, so every answer hands back
-- the next one; tokens come from the file named after `--` (one family each).
local tokens = {}

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end

function request()
  local token = table.remove(tokens, 1)
  local body = '{"refresh_token":"' .. (token or "spent") .. '"}'
  return wrk.format("POST", "/v1/auth/token/refresh", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then tokens[#tokens + 1] = token end
end
