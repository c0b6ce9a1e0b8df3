-- wrk script for benches/webhooks.rs: POSTs the same signed delivery body with a new
-- X-GitHub-Delivery id every time (hoist deduplicates on it).
local body = io.open(os.getenv("HOIST_BENCH_BODY"), "rb"):read("*a")
local signature = os.getenv("HOIST_BENCH_SIGNATURE")
local run = os.getenv("HOIST_BENCH_RUN")
local threads = 0
local counter = 0

function setup(thread)
  thread:set("thread", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local headers = {
    ["X-GitHub-Event"] = "package",
    ["X-GitHub-Delivery"] = string.format("bench-%s-%d-%d", run, thread, counter),
    ["X-Hub-Signature-256"] = signature,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/webhooks/github", headers, body)
end
