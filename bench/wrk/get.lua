-- Plain GET load (wrk's default request); headers such as Connection: close come from -H.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
