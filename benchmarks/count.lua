-- Counts responses by the worker named in the body ("... worker N ...").
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local worker = string.match(body, "worker (%d+)") or "-"
  counts[worker] = (counts[worker] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for worker, n in pairs(thread:get("counts")) do
      total[worker] = (total[worker] or 0) + n
    end
  end
  for worker, n in pairs(total) do
    io.write(string.format("COUNT %s %d\n", worker, n))
  end
end
