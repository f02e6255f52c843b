-- POST /v1/auth/signup with a new address every time (the tag after `--` keeps runs apart).
local tag, n = "run", 0

function init(args)
  tag = args[1] or tag
end

function request()
  n = n + 1
  local body = '{"email":"max-' .. tag .. '-' .. n .. '@example.com","password":"benchmark passphrase"}'
  return wrk.format("POST", "/v1/auth/signup", {["Content-Type"] = "application/json"}, body)
end
