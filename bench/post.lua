-- POST the OpenWhisk /run body in $WRK_BODY_FILE on every request (wrk's Lua has no args at setup).
local f = assert(io.open(assert(os.getenv("WRK_BODY_FILE"), "WRK_BODY_FILE not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
