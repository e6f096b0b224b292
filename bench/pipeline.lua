-- wrk script: HTTP/1.1 pipelining.
-- Every "request" wrk writes is a batch of DEPTH identical GETs sent back to
-- back on one connection; wrk counts each response, so Requests/sec is the
-- number of individual responses per second.
--
-- Path:  first script argument (wrk ... -s pipeline.lua URL -- /path),
--        else $PIPELINE_PATH, else the path of the URL given to wrk.
-- Depth: second script argument, else $PIPELINE_DEPTH, else 16.

local path, depth

function init(args)
    path  = args[1] or os.getenv("PIPELINE_PATH") or wrk.path
    depth = tonumber(args[2] or os.getenv("PIPELINE_DEPTH") or "16")
    if depth == nil or depth < 1 then
        error("pipeline.lua: bad pipeline depth")
    end
    local r = {}
    for i = 1, depth do
        r[i] = wrk.format("GET", path)
    end
    req = table.concat(r)
end

function request()
    return req
end
