-- POST /v1/auth/login for the verified users listed in the file named after `--`.
local users, i = {}, 0

function init(args)
  for line in io.lines(args[1]) do users[#users + 1] = line end
end

function request()
  i = i % #users + 1
  local body = '{"email":"' .. users[i] .. '","password":"benchmark passphrase"}'
  return wrk.format("POST", "/v1/auth/login", {["Content-Type"] = "application/json"}, body)
end
