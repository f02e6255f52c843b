-- GET with a DPoP-bound token and a new proof each request (RFC 9449 refuses a proof
-- twice): the proofs, signed beforehand, come from the file named after `--`, the token
-- second. Once they run out, requests go without one and are counted as errors.
local proofs, token, i = {}, "", 0

function init(args)
  for line in io.lines(args[1]) do proofs[#proofs + 1] = line end
  token = args[2]
end

function request()
  i = i + 1
  local headers = {["Authorization"] = "DPoP " .. token, ["DPoP"] = proofs[i]}
  return wrk.format("GET", wrk.path, headers)
end
