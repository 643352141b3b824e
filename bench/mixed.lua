-- A mixed load for wrk: cycles through the request lines of a file.
-- Each line is a path, optionally followed by a tab and "hx" for an htmx request.
-- Usage: wrk -t1 -c8 -d2s -s bench/mixed.lua http://127.0.0.1:PORT -- FILE
local lines, i = {}, 0

function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
end

function request()
  i = i % #lines + 1
  local path, kind = lines[i]:match("([^\t]+)\t?(.*)")
  if kind == "hx" then
    return wrk.format("GET", path, { ["HX-Request"] = "true", ["HX-Current-URL"] = "http://127.0.0.1/?preset=testmodel" })
  end
  return wrk.format("GET", path)
end
