"""In flight for 1 s as an async action: a task on the launcher's event loop, no worker."""

import asyncio


async def main(args):
    await asyncio.sleep(1)
    return {"id": args.get("i")}
