-- wrk script for benches/webhooks.rs: POSTs the same signed delivery body with a new
-- X-GitHub-Delivery id every time (hoist deduplicates on it). The ids are random GUIDs, as
-- GitHub's are: sequential ids would hide the cost of remembering them in random order.
local body = io.open(os.getenv("HOIST_BENCH_BODY"), "rb"):read("*a")
local signature = os.getenv("HOIST_BENCH_SIGNATURE")
-- One seed per run (benches/webhooks.rs), so that no two runs send the same ids.
math.randomseed(tonumber(os.getenv("HOIST_BENCH_SEED")))

local function r16()
  return math.random(0, 0xffff)
end

function request()
  local headers = {
    ["X-GitHub-Event"] = "package",
    ["X-GitHub-Delivery"] = string.format("%04x%04x-%04x-%04x-%04x-%04x%04x%04x",
      r16(), r16(), r16(), r16(), r16(), r16(), r16(), r16()),
    ["X-Hub-Signature-256"] = signature,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/webhooks/github", headers, body)
end
